"""What chatproxy adds to a request: the same load direct to a mock upstream and through it.

Prints requests/s, added p50/p99 latency and chatproxy's CPU time per request at 1, 16 and
64 connections, plus idle RSS and start-up time. Uses wrk when installed (it takes little CPU
from the two processes being measured); otherwise a Python load generator, whose own CPU use
skews the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.common import chatproxy, cpu_seconds, mock_upstream, passthrough, rss_mb

BODY = json.dumps({"messages": [{"role": "user", "content": "Привет! How are you today?"}]})
WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = {json.dumps(BODY)}
wrk.headers["Content-Type"] = "application/json"
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


@dataclass
class Run:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    assert match, f"unknown wrk latency {text!r}"
    value, unit = match.groups()
    return float(value) * UNITS[unit]


def run_wrk(url: str, connections: int, seconds: float) -> Run:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(script.name).unlink()
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    assert total, out
    seconds_taken = float(total.group(2)) * {"s": 1, "ms": 1e-3, "m": 60}[total.group(3)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Run(
        int(total.group(1)),
        seconds_taken,
        _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        int(errors.group(1)) if errors else 0,
    )


async def _python_load(url: str, connections: int, seconds: float) -> Run:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                started = time.perf_counter()
                async with session.post(
                    url, data=BODY, headers={"Content-Type": "application/json"}
                ) as resp:
                    await resp.read()
                    errors += resp.status != 200
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.monotonic() - started
    latencies.sort()
    return Run(
        len(latencies),
        elapsed,
        statistics.median(latencies),
        latencies[int(len(latencies) * 0.99) - 1],
        errors,
    )


def load(url: str, connections: int, seconds: float) -> Run:
    if shutil.which("wrk"):
        return run_wrk(url, connections, seconds)
    return asyncio.run(_python_load(url, connections, seconds))


@dataclass
class Round:
    """One round at one connection count: direct, bare pass-through and chatproxy in turn."""

    direct: Run
    bare: Run
    proxy: Run
    proxy_cpu: float
    bare_cpu: float


def one_round(urls: tuple[str, str, str], pids: tuple[int, int], conns: int, secs: float) -> Round:
    direct_url, bare_url, proxy_url = urls
    bare_pid, proxy_pid = pids
    direct = load(direct_url, conns, secs)
    before = cpu_seconds(bare_pid)
    bare = load(bare_url, conns, secs)
    bare_cpu = (cpu_seconds(bare_pid) - before) / max(bare.requests, 1)
    before = cpu_seconds(proxy_pid)
    through = load(proxy_url, conns, secs)
    proxy_cpu = (cpu_seconds(proxy_pid) - before) / max(through.requests, 1)
    assert through.errors == 0, f"{through.errors} failed requests through chatproxy"
    return Round(direct, bare, through, proxy_cpu, bare_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="per load run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="alternating rounds per connection count; the table shows their medians",
    )
    parser.add_argument("--connections", default="1,16,64")
    args = parser.parse_args()
    levels = [int(c) for c in args.connections.split(",")]
    print(f"load generator: {'wrk' if shutil.which('wrk') else 'python (skews CPU figures)'}")
    with (
        mock_upstream() as (upstream, _),
        chatproxy(upstream) as (url, proxy, startup),
        passthrough(upstream) as (bare_url, bare_pid),
    ):
        time.sleep(0.5)
        idle_rss = rss_mb(proxy.pid)
        for warm in (f"{url}/chatgpt/", f"{bare_url}/chatgpt/", f"{upstream}/chat/completions"):
            load(warm, 4, 1.0)
        print(
            f"chatproxy ready in {startup * 1000:.0f} ms from process start; "
            f"idle RSS {idle_rss:.1f} MB"
        )
        print(
            "CPU/req: CPU time of that process divided by requests served; 'bare' is a "
            "minimal aiohttp pass-through proxy (bench/passthrough.py). Medians of "
            f"{args.rounds} rounds of {args.seconds:g} s each, direct, bare and chatproxy "
            "taking turns, so that the VM's drift reaches all three alike; the range is "
            "chatproxy's CPU/req over the rounds."
        )
        print(
            f"{'conns':>5} {'direct rps':>10} {'proxy rps':>9} {'+p50 ms':>8} {'+p99 ms':>8} "
            f"{'bare +p50':>9} "
            f"{'proxy CPU/req ms':>16} {'bare CPU/req ms':>15} {'proxy/bare':>10} "
            f"{'CPU/req range':>15}"
        )
        urls = (f"{upstream}/chat/completions", f"{bare_url}/chatgpt/", f"{url}/chatgpt/")
        for connections in levels:
            rounds = [
                one_round(urls, (bare_pid, proxy.pid), connections, args.seconds)
                for _ in range(args.rounds)
            ]
            cpu = sorted(r.proxy_cpu * 1000 for r in rounds)
            print(
                f"{connections:>5} {median(r.direct.rps for r in rounds):>10.0f} "
                f"{median(r.proxy.rps for r in rounds):>9.0f} "
                f"{median(r.proxy.p50_ms - r.direct.p50_ms for r in rounds):>8.3f} "
                f"{median(r.proxy.p99_ms - r.direct.p99_ms for r in rounds):>8.3f} "
                f"{median(r.bare.p50_ms - r.direct.p50_ms for r in rounds):>9.3f} "
                f"{median(cpu):>16.3f} {median(r.bare_cpu * 1000 for r in rounds):>15.3f} "
                f"{median(r.proxy_cpu / r.bare_cpu for r in rounds):>10.2f} "
                f"{f'{cpu[0]:.3f}-{cpu[-1]:.3f}':>15}"
            )
        print(f"chatproxy RSS after load: {rss_mb(proxy.pid):.1f} MB")


if __name__ == "__main__":
    main()
