"""Sustained load on a real chatproxy process: no errors, no growth, no leaked descriptors.

Against `python -m chatproxy` in front of bench/mock_upstream.py (a model-paced stream:
20 chunks, 5 ms apart), at 64 connections: 20,000 plain requests (RSS read after the
first 2,000 and after all), 2,000 streams read to their `done` event, then 500 streams
whose client closes the socket after the first event. Criteria, each printed with its
verdict (the exit status is 1 if one fails):

- errors: 0 (a non-200, a failed connection, a stream without `done`, a disconnect that got
  no first event, an ERROR or traceback in chatproxy's log, /health failing at the end);
- RSS after 20,000 requests within 10% of RSS after 2,000;
- descriptors: back to the count after warm-up within a short settle (the upstream pool,
  once warm, neither grows nor keeps a cut stream's connection); and with `--idle-wait`,
  back to the idle count before any load once idle upstream keep-alives expire
  (aiohttp closes them 15-30 s after last use).

Plain requests go through wrk when installed (count-limited by a Lua script; it stops with
up to `connections - 1` requests in flight, which chatproxy sees as clients leaving), else
through an aiohttp client; streams and disconnects always go through the aiohttp client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.common import free_port, mock_upstream, process, rss_mb, wait_http

KEY = "sk-bench-load-5f1c0a9e7d3b"  # the configured key: the log must never show it
USER = {"role": "user", "content": "Привет! How are you today?"}
PLAIN = json.dumps({"messages": [USER]})
STREAM = json.dumps({"messages": [USER], "stream": True})
HEADERS = {"Content-Type": "application/json"}
RSS_GROWTH = 0.10
SETTLE = 5.0  # seconds the descriptors get to come back after the load


@dataclass
class Plan:
    requests: int = 20_000
    rss_first: int = 2_000  # RSS is read after this many requests, and after all
    streams: int = 2_000
    disconnects: int = 500
    connections: int = 64
    chunks: int = 20
    gap: float = 0.005
    generator: str = "auto"  # auto (wrk when installed), wrk, python
    idle_wait: float = 0.0  # > 0: also wait for descriptors to return to the idle count

    def scaled(self, factor: float) -> Plan:
        def at(n: int) -> int:
            return max(1, round(n * factor))

        return Plan(
            at(self.requests),
            at(self.rss_first),
            at(self.streams),
            at(self.disconnects),
            self.connections,
            self.chunks,
            self.gap,
            self.generator,
            self.idle_wait,
        )


@dataclass
class Phase:
    name: str
    count: int
    errors: int
    seconds: float
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    plan: Plan
    generator: str = ""
    phases: list[Phase] = field(default_factory=list)
    rss_idle: float = 0.0
    rss_first: float = 0.0
    rss_all: float = 0.0
    rss_end: float = 0.0
    fds_idle: int = 0
    fds_start: int = 0
    fds_end: int = 0
    fds_later: int | None = None  # after --idle-wait
    settle_s: float = 0.0
    log_errors: list[str] = field(default_factory=list)
    key_in_log: bool = False
    statuses: dict[int, int] = field(default_factory=dict)  # access lines by status
    healthy_after: bool = False
    seconds: float = 0.0

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.phases) + len(self.log_errors) + (not self.healthy_after)

    @property
    def rss_growth(self) -> float:
        return self.rss_all / self.rss_first - 1 if self.rss_first else 0.0

    def criteria(self) -> list[tuple[str, bool, str]]:
        """(criterion, passed, figures) for each criterion."""
        found = [
            ("zero errors", self.errors == 0, f"{self.errors} errors"),
            (
                f"RSS after {self.plan.requests} requests within {RSS_GROWTH:.0%} of after "
                f"{self.plan.rss_first}",
                self.rss_growth <= RSS_GROWTH,
                f"{self.rss_first:.1f} -> {self.rss_all:.1f} MB ({self.rss_growth:+.1%})",
            ),
            (
                "descriptors back to the warm start",
                self.fds_end <= self.fds_start,
                f"{self.fds_start} -> {self.fds_end} (settled in {self.settle_s:.1f} s)",
            ),
        ]
        if self.fds_later is not None:
            found.append(
                (
                    "descriptors back to idle once keep-alives expire",
                    self.fds_later <= self.fds_idle,
                    f"{self.fds_idle} idle -> {self.fds_later}",
                )
            )
        return found

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.criteria())

    def lines(self) -> Iterator[str]:
        plan = self.plan
        yield (
            f"load: {plan.requests} plain requests, {plan.streams} streams, {plan.disconnects} "
            f"disconnects after the first event, {plan.connections} connections; plain "
            f"requests by {self.generator}; upstream stream {plan.chunks} chunks "
            f"{plan.gap * 1000:g} ms apart"
        )
        for phase in self.phases:
            rate = phase.count / phase.seconds if phase.seconds else 0.0
            notes = f" ({'; '.join(phase.notes)})" if phase.notes else ""
            yield (
                f"  {phase.name:<28} {phase.count:>6} in {phase.seconds:6.2f} s "
                f"{rate:7.0f}/s  errors {phase.errors}{notes}"
            )
        yield (
            f"  RSS MB: idle {self.rss_idle:.1f}, after {plan.rss_first} requests "
            f"{self.rss_first:.1f}, after {plan.requests} {self.rss_all:.1f}, at the end "
            f"{self.rss_end:.1f}"
        )
        later = "" if self.fds_later is None else f", after the idle wait {self.fds_later}"
        yield (
            f"  descriptors: idle {self.fds_idle}, after warm-up {self.fds_start}, "
            f"end {self.fds_end}{later}"
        )
        yield (
            f"  server log: {len(self.log_errors)} errors, configured key "
            f"{'PRESENT' if self.key_in_log else 'absent'}; access lines by status "
            f"{self.statuses}; /health after: {'ok' if self.healthy_after else 'FAILED'}"
        )
        for line in self.log_errors[:5]:
            yield f"    {line}"
        yield f"  total {self.seconds:.1f} s"
        for name, ok, figures in self.criteria():
            yield f"{'PASS' if ok else 'FAIL'}  {name}: {figures}"


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextmanager
def chatproxy_process(upstream: str, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m chatproxy`, as `make run` starts it, its log written to `log`."""
    port = free_port()
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": upstream, "LOG_LEVEL": "INFO"}
    command = [sys.executable, "-m", "chatproxy", "--port", str(port), "--env-file", os.devnull]
    with process(command, env, log=log) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health")
        yield url, proc


async def _workers(count: int, connections: int, one: Callable[[int], Awaitable[None]]) -> None:
    """Runs `one(i)` for i in range(count), `connections` at a time."""
    next_index = iter(range(count))

    async def worker() -> None:
        for index in next_index:
            await one(index)

    await asyncio.gather(*(worker() for _ in range(min(connections, count))))


async def plain_python(url: str, count: int, connections: int) -> Phase:
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def one(_: int) -> None:
            nonlocal errors
            try:
                async with session.post(f"{url}/chatgpt/", data=PLAIN, headers=HEADERS) as resp:
                    body = await resp.read()
                    reply = json.loads(body)["messages"][-1] if resp.status == 200 else {}
                    errors += reply.get("role") != "assistant"
            except (aiohttp.ClientError, ValueError, KeyError, TypeError):
                errors += 1

        started = time.monotonic()
        await _workers(count, connections, one)
        return Phase("plain requests", count, errors, time.monotonic() - started)


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
local answered, bad = 0, 0
function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then bad = bad + 1 end
  if answered >= {count} then
    io.write(string.format("answered %d non-200 %d\\n", answered, bad))
    io.flush()
    os.exit(0)
  end
end
"""


def plain_wrk(url: str, count: int, connections: int) -> Phase:
    """`count` requests through wrk (one thread). Its script exits at the count (wrk's own
    stop still waits out the duration), cutting the requests then in flight; if the count
    is never reached, wrk's summary at the time limit gives the socket errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(body=json.dumps(PLAIN), count=count))
    limit = 60 + count // 100
    try:
        started = time.monotonic()
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{min(connections, count)}",
                f"-d{limit}s",
                "-s",
                script.name,
                f"{url}/chatgpt/",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        seconds = time.monotonic() - started
    finally:
        Path(script.name).unlink()
    finished = re.search(r"answered (\d+) non-200 (\d+)", out)
    if finished:
        return Phase("plain requests", int(finished.group(1)), int(finished.group(2)), seconds)
    total = re.search(r"(\d+) requests in", out)
    done = int(total.group(1)) if total else 0
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(n) for n in sockets.groups()) if sockets else 0
    errors += max(0, count - done)  # fewer answers than asked for, in time
    return Phase("plain requests", done, errors, seconds, [f"wrk hit its {limit} s limit"])


async def streams(url: str, count: int, connections: int) -> Phase:
    """Streams read to the end: each must end with a `done` event and carry no error."""
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def one(_: int) -> None:
            nonlocal errors
            try:
                async with session.post(f"{url}/chatgpt/", data=STREAM, headers=HEADERS) as resp:
                    body = await resp.read()
                    errors += (
                        resp.status != 200 or b"event: done" not in body or b"event: error" in body
                    )
            except aiohttp.ClientError:
                errors += 1

        started = time.monotonic()
        await _workers(count, connections, one)
        return Phase("streams", count, errors, time.monotonic() - started)


async def disconnects(url: str, count: int, connections: int) -> Phase:
    """Streams whose client closes its socket once the first event has arrived."""
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def one(_: int) -> None:
            nonlocal errors
            try:
                resp = await session.post(f"{url}/chatgpt/", data=STREAM, headers=HEADERS)
                try:
                    first = await resp.content.readuntil(b"\n\n")
                    errors += resp.status != 200 or not first.startswith(b"event: delta")
                finally:
                    resp.close()  # closes the connection itself, mid-stream
            except aiohttp.ClientError:
                errors += 1

        started = time.monotonic()
        await _workers(count, connections, one)
        return Phase("disconnects after 1st event", count, errors, time.monotonic() - started)


def settle(pid: int, target: int, limit: float) -> tuple[int, float]:
    """Descriptors once they reach `target`, or after `limit` seconds; and the wait."""
    started = time.monotonic()
    while True:
        count = fd_count(pid)
        waited = time.monotonic() - started
        if count <= target or waited >= limit:
            return count, waited
        time.sleep(0.1)


def read_log(report: Report, log: Path) -> None:
    text = log.read_text("utf-8", "replace")
    report.key_in_log = KEY in text
    # One per incident: ERROR and CRITICAL lines, and tracebacks that no such line announced.
    report.log_errors = []
    announced = False
    for line in text.splitlines():
        if re.search(r" (ERROR|CRITICAL) ", line):
            report.log_errors.append(line)
            announced = True
        elif line.startswith("Traceback") and not announced:
            report.log_errors.append(line)
        elif re.match(r"\d{4}-\d\d-\d\d ", line):  # the next log line
            announced = False
    report.statuses = dict(
        sorted(Counter(int(s) for s in re.findall(r" POST /chatgpt/ (\d{3}) ", text)).items())
    )


def run(plan: Plan, keep_log: Path | None = None) -> Report:
    """Runs the whole load against a fresh chatproxy and mock upstream; `keep_log` gets a
    copy of chatproxy's log."""
    wrk = plan.generator == "wrk" or (plan.generator == "auto" and shutil.which("wrk"))
    report = Report(plan, generator="wrk" if wrk else "aiohttp client")
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock_upstream(chunks=plan.chunks, gap=plan.gap) as (upstream, _),
        chatproxy_process(upstream, Path(tmp) / "chatproxy.log") as (url, proc),
    ):
        pid = proc.pid
        time.sleep(0.3)
        report.rss_idle, report.fds_idle = rss_mb(pid), fd_count(pid)
        # Warm-up: a full upstream pool (streams keep every connection busy at once).
        warm = min(plan.connections * 2, max(plan.streams, 1))
        asyncio.run(streams(url, warm, plan.connections))
        time.sleep(0.3)
        report.fds_start = fd_count(pid)

        def plain(count: int) -> Phase:
            if wrk:
                return plain_wrk(url, count, plan.connections)
            return asyncio.run(plain_python(url, count, plan.connections))

        first = plain(plan.rss_first)
        report.rss_first = rss_mb(pid)
        rest = plain(plan.requests - plan.rss_first) if plan.requests > plan.rss_first else None
        report.rss_all = rss_mb(pid)
        if rest is not None:
            first = Phase(
                "plain requests",
                first.count + rest.count,
                first.errors + rest.errors,
                first.seconds + rest.seconds,
            )
        report.phases.append(first)
        report.phases.append(asyncio.run(streams(url, plan.streams, plan.connections)))
        report.phases.append(asyncio.run(disconnects(url, plan.disconnects, plan.connections)))
        report.fds_end, report.settle_s = settle(pid, report.fds_start, SETTLE)
        report.rss_end = rss_mb(pid)
        try:
            wait_http(f"{url}/health", timeout=5.0)
            report.healthy_after = True
        except RuntimeError:
            report.healthy_after = False
        if plan.idle_wait > 0:
            report.fds_later, _ = settle(pid, report.fds_idle, plan.idle_wait)
        report.seconds = time.monotonic() - started
        read_log(report, Path(tmp) / "chatproxy.log")
        if keep_log is not None:
            shutil.copyfile(Path(tmp) / "chatproxy.log", keep_log)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every count")
    parser.add_argument("--requests", type=int, default=Plan.requests)
    parser.add_argument("--streams", type=int, default=Plan.streams)
    parser.add_argument("--disconnects", type=int, default=Plan.disconnects)
    parser.add_argument("--connections", type=int, default=Plan.connections)
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=35.0,
        help="seconds to wait for descriptors to return to idle (0: skip that check)",
    )
    parser.add_argument("--log", type=Path, help="keep a copy of chatproxy's log here")
    args = parser.parse_args()
    plan = Plan(
        requests=args.requests,
        rss_first=max(1, args.requests // 10),
        streams=args.streams,
        disconnects=args.disconnects,
        connections=args.connections,
        generator=args.generator,
        idle_wait=args.idle_wait,
    ).scaled(args.scale)
    report = run(plan, keep_log=args.log)
    for line in report.lines():
        print(line)
    sys.exit(0 if report.passed else 1)


if __name__ == "__main__":
    main()
