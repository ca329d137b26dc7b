"""What the history layer adds to a request: chatproxy's CPU per request on `/chatgpt/`,
stateless against naming a conversation, in one process with HISTORY_STORE set.

Both kinds of request go through the same process (SQLite by default), in interleaved
rounds, so the ratio isolates the layer: recalling the last HISTORY_MAX_TURNS turns,
sending them upstream, and appending the new turn. Conversations are spread over
`--conversations` ids, so each grows to a realistic length during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import chatproxy, cpu_seconds, mock_upstream

MESSAGE = {"role": "user", "content": "Привет! How are you today?"}


async def _load(url: str, connections: int, requests: int, conversations: int | None) -> int:
    """`requests` POSTs over `connections`; returns how many failed."""
    counter = iter(range(requests))
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for number in counter:
            body: dict[str, object] = {"messages": [MESSAGE]}
            if conversations is not None:
                body["conversation_id"] = f"bench-{number % conversations}"
            async with session.post(url, json=body) as resp:
                await resp.read()
                failures += resp.status != 200

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    return failures


def cpu_per_request(
    url: str, pid: int, connections: int, requests: int, conversations: int | None
) -> float:
    """Milliseconds of chatproxy's CPU per request over one round."""
    before = cpu_seconds(pid)
    failures = asyncio.run(_load(url, connections, requests, conversations))
    if failures:
        raise SystemExit(f"{failures} of {requests} requests failed")
    return (cpu_seconds(pid) - before) * 1000 / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="sqlite", help="sqlite, or a HISTORY_STORE URL")
    parser.add_argument("--requests", type=int, default=2000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--max-turns", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = args.store
        if store == "sqlite":
            store = f"sqlite:///{Path(folder) / 'bench.db'}"
        with (
            mock_upstream(chunks=1) as (upstream, _),
            chatproxy(
                upstream,
                HISTORY_STORE=store,
                HISTORY_MAX_TURNS=str(args.max_turns),
                LOG_LEVEL="WARNING",
            ) as (base, proc, _),
        ):
            url = f"{base}/chatgpt/"
            cpu_per_request(url, proc.pid, args.connections, 500, None)  # warm up
            cpu_per_request(url, proc.pid, args.connections, 500, args.conversations)
            stateless, layered = [], []
            started = time.monotonic()
            for _ in range(args.rounds):
                stateless.append(
                    cpu_per_request(url, proc.pid, args.connections, args.requests, None)
                )
                layered.append(
                    cpu_per_request(
                        url, proc.pid, args.connections, args.requests, args.conversations
                    )
                )
            elapsed = time.monotonic() - started
    plain, history = statistics.median(stateless), statistics.median(layered)
    stored = (args.rounds * args.requests + 500) * 2
    print(
        f"chatproxy CPU per request on /chatgpt/, {args.connections} connections, medians of "
        f"{args.rounds} interleaved rounds of {args.requests} ({elapsed:.0f} s):"
    )
    print(f"  stateless                      : {plain:.3f} ms")
    print(
        f"  naming one of {args.conversations} conversations: {history:.3f} ms  "
        f"({history / plain:.2f}x stateless; {args.max_turns} turns recalled, "
        f"~{stored:,} messages stored by the end)"
    )


if __name__ == "__main__":
    main()
