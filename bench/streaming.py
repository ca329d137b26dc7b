"""Streaming overhead: time to first byte through chatproxy minus direct, and CPU per chunk.

Time to first byte is measured against a mock that paces its chunks like a model does
(`--gap`, 5 ms: 200 tokens/s); a mock that bursts all chunks at once would mostly measure
three processes fighting over two cores. CPU per chunk uses such a burst (`--chunks`).
Requests run one at a time; medians over `--requests` runs, all in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp

from bench.common import chatproxy, cpu_seconds, mock_upstream

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Tell me a story"}],
    "stream": True,
}


async def time_to_first_byte(session: aiohttp.ClientSession, url: str, runs: int) -> list[float]:
    """Milliseconds from sending the request to the first content event."""
    samples: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        async with session.post(
            url, data=json.dumps(BODY), headers={"Content-Type": "application/json"}
        ) as resp:
            async for line in resp.content:
                if b"content" in line:
                    samples.append((time.perf_counter() - started) * 1000)
                    break
            await resp.read()
    return samples


async def drain(session: aiohttp.ClientSession, url: str, runs: int) -> None:
    for _ in range(runs):
        async with session.post(url, json=BODY) as resp:
            await resp.read()


async def measure_ttfb(upstream: str, url: str, runs: int) -> None:
    async with aiohttp.ClientSession() as session:
        await time_to_first_byte(session, f"{url}/chatgpt/", 20)  # warm up
        await time_to_first_byte(session, f"{upstream}/chat/completions", 20)
        direct: list[float] = []
        through: list[float] = []
        for _ in range(5):  # interleave so drift hits both alike
            direct += await time_to_first_byte(session, f"{upstream}/chat/completions", runs // 5)
            through += await time_to_first_byte(session, f"{url}/chatgpt/", runs // 5)
    d50, t50 = statistics.median(direct), statistics.median(through)
    d90, t90 = statistics.quantiles(direct, n=10)[-1], statistics.quantiles(through, n=10)[-1]
    print(
        f"time to first byte, median of {len(direct)}: direct {d50:.3f} ms, through "
        f"chatproxy {t50:.3f} ms, added {t50 - d50:.3f} ms (p90 added {t90 - d90:.3f} ms)"
    )


async def measure_cpu(url: str, pid: int, chunks: int) -> None:
    async with aiohttp.ClientSession() as session:
        await drain(session, f"{url}/chatgpt/", 5)
        native_before = cpu_seconds(pid)
        await drain(session, f"{url}/chatgpt/", 50)
        native = (cpu_seconds(pid) - native_before) / (50 * chunks)
        v1_before = cpu_seconds(pid)
        await drain(session, f"{url}/v1/chat/completions", 50)
        v1 = (cpu_seconds(pid) - v1_before) / (50 * chunks)
    print(
        f"chatproxy CPU per relayed chunk ({chunks} chunks a stream, 50 streams): "
        f"native {native * 1e6:.1f} us, /v1 {v1 * 1e6:.1f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.005)
    args = parser.parse_args()
    with (
        mock_upstream(chunks=20, gap=args.gap) as (upstream, _),
        chatproxy(upstream) as (url, _proc, _startup),
    ):
        asyncio.run(measure_ttfb(upstream, url, args.requests))
    with (
        mock_upstream(chunks=args.chunks) as (upstream, _),
        chatproxy(upstream) as (url, proc, _startup),
    ):
        asyncio.run(measure_cpu(url, proc.pid, args.chunks))


if __name__ == "__main__":
    main()
