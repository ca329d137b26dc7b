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
import os
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


def wrk_script(body: str) -> str:
    return f"""
wrk.method = "POST"
wrk.body = {json.dumps(body)}
wrk.headers["Content-Type"] = "application/json"
"""


WRK_SCRIPT = wrk_script(BODY)
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


def run_wrk(url: str, connections: int, seconds: float, body: str = BODY) -> Run:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(body))
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


async def _python_load(url: str, connections: int, seconds: float, body: str = BODY) -> Run:
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
                    url, data=body, headers={"Content-Type": "application/json"}
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


def load(url: str, connections: int, seconds: float, body: str = BODY) -> Run:
    if shutil.which("wrk"):
        return run_wrk(url, connections, seconds, body)
    return asyncio.run(_python_load(url, connections, seconds, body))


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


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its children (a --workers parent and its workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return cpu_seconds(pid) + sum(process_tree_cpu(int(kid)) for kid in kids)


def workers_row(seconds: float, connections: int = 64, rounds: int = 3) -> None:
    """requests/s at `connections` through chatproxy with WORKERS=1 and WORKERS=2 (one
    port, SO_REUSEPORT), in front of the same mock upstream; with the ratio, and the CPU
    cores each side used (a mock or a load generator at its limit caps the ratio)."""
    print(f"\n--workers: requests/s at {connections} connections, median of {rounds} runs")
    print(f"{'workers':>7} {'rps':>7} {'chatproxy cores':>15} {'mock cores':>10}")
    rates: dict[int, float] = {}
    with mock_upstream() as (upstream, mock_pid):
        for count in (1, 2):
            with chatproxy(upstream, WORKERS=str(count)) as (url, proxy, _):
                time.sleep(3.0)  # /health answered; the other workers may still be starting
                load(f"{url}/chatgpt/", 8, 1.0)
                runs, proxy_cores, mock_cores = [], [], []
                for _ in range(rounds):
                    proxy_before, mock_before = process_tree_cpu(proxy.pid), cpu_seconds(mock_pid)
                    run = load(f"{url}/chatgpt/", connections, seconds)
                    assert run.errors == 0, f"{run.errors} failed requests with {count} workers"
                    runs.append(run.rps)
                    proxy_cores.append((process_tree_cpu(proxy.pid) - proxy_before) / run.seconds)
                    mock_cores.append((cpu_seconds(mock_pid) - mock_before) / run.seconds)
                rates[count] = median(runs)
                print(
                    f"{count:>7} {rates[count]:>7.0f} {median(proxy_cores):>15.2f} "
                    f"{median(mock_cores):>10.2f}"
                )
    print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x (on {os.cpu_count()} CPUs)")


RESPONSES_BODY = json.dumps(
    {"model": "chatgpt/gpt-4o-mini", "input": "Привет! How are you today?", "store": False}
)
EMBEDDINGS_BODY = json.dumps(
    {"model": "chatgpt/text-embedding-3-small", "input": "Привет! How are you today?"}
)
# What the openai SDK sends when the caller names no format.
EMBEDDINGS_BASE64_BODY = json.dumps(
    {
        "model": "chatgpt/text-embedding-3-small",
        "input": "Привет! How are you today?",
        "encoding_format": "base64",
    }
)


def endpoint_row(
    path: str, body: str, seconds: float, rounds: int, connections: int, label: str = ""
) -> None:
    """chatproxy's CPU per request on `path` against the bare pass-through's on /chatgpt/
    (the same reference as the /chatgpt/ rows), medians of alternating rounds."""
    with (
        mock_upstream() as (upstream, _),
        chatproxy(upstream) as (url, proxy, _),
        passthrough(upstream) as (bare_url, bare_pid),
    ):
        load(f"{url}{path}", 4, 1.0, body)
        load(f"{bare_url}/chatgpt/", 4, 1.0)
        proxy_cpu, bare_cpu, rps = [], [], []
        for _ in range(rounds):
            before = cpu_seconds(bare_pid)
            bare = load(f"{bare_url}/chatgpt/", connections, seconds)
            bare_cpu.append((cpu_seconds(bare_pid) - before) / max(bare.requests, 1))
            before = cpu_seconds(proxy.pid)
            run = load(f"{url}{path}", connections, seconds, body)
            assert run.errors == 0, f"{run.errors} failed requests on {path}"
            proxy_cpu.append((cpu_seconds(proxy.pid) - before) / max(run.requests, 1))
            rps.append(run.rps)
    ratios = [p / b for p, b in zip(proxy_cpu, bare_cpu, strict=True)]
    print(
        f"{path + label:<22} {connections:>5} {median(rps):>9.0f} "
        f"{median(proxy_cpu) * 1000:>16.3f} {median(bare_cpu) * 1000:>15.3f} "
        f"{median(ratios):>10.2f}"
    )


def responses_row(seconds: float, rounds: int = 3, connections: int = 16) -> None:
    """`/v1/responses` (store: false, so no history store is involved) -> chat upstream."""
    print(
        f"\n{'route':<22} {'conns':>5} {'proxy rps':>9} {'proxy CPU/req ms':>16} "
        f"{'bare CPU/req ms':>15} {'proxy/bare':>10}"
    )
    endpoint_row("/v1/responses", RESPONSES_BODY, seconds, rounds, connections)


def embeddings_row(seconds: float, rounds: int = 3, connections: int = 16) -> None:
    """`/v1/embeddings`, one input, a 1536-dimension vector back: as floats (re-encoded),
    and as base64 (the SDK's default; passed through)."""
    endpoint_row("/v1/embeddings", EMBEDDINGS_BODY, seconds, rounds, connections, " float")
    endpoint_row("/v1/embeddings", EMBEDDINGS_BASE64_BODY, seconds, rounds, connections, " b64")


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
    workers_row(args.seconds)
    responses_row(args.seconds)
    embeddings_row(args.seconds)


if __name__ == "__main__":
    main()
