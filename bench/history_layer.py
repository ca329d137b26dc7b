"""What the history layer adds to a request: chatproxy's CPU per request on `/chatgpt/`,
in one process with HISTORY_STORE set (SQLite by default), three kinds of request in
interleaved rounds:

- stateless, one message: the cheapest request there is;
- stateless, the whole conversation: a client that keeps its own history sends the same
  HISTORY_MAX_TURNS turns the layer would recall, so upstream and answer are the same size;
- naming a conversation, one message: the layer recalls those turns and appends a new one.

The second is the like-for-like baseline: the layer's cost is the third over the second.
Conversations are spread over `--conversations` ids, each grown to its full length first.
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
REPLY = {"role": "assistant", "content": "Hello from the mock!"}  # bench/mock_upstream.py's


async def _load(
    url: str, connections: int, requests: int, conversations: int | None, resent: list[object]
) -> int:
    """`requests` POSTs over `connections`; returns how many failed."""
    counter = iter(range(requests))
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for number in counter:
            body: dict[str, object] = {"messages": [*resent, MESSAGE]}
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
    url: str,
    pid: int,
    connections: int,
    requests: int,
    conversations: int | None,
    resent: list[object] | None = None,
) -> float:
    """Milliseconds of chatproxy's CPU per request over one round."""
    before = cpu_seconds(pid)
    failures = asyncio.run(_load(url, connections, requests, conversations, resent or []))
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
    conns, many, turns = args.connections, args.conversations, args.max_turns
    with tempfile.TemporaryDirectory() as folder:
        store = args.store
        if store == "sqlite":
            store = f"sqlite:///{Path(folder) / 'bench.db'}"
        with (
            mock_upstream(chunks=1) as (upstream, _),
            chatproxy(
                upstream, HISTORY_STORE=store, HISTORY_MAX_TURNS=str(turns), LOG_LEVEL="WARNING"
            ) as (base, proc, _),
        ):
            url = f"{base}/chatgpt/"
            cpu_per_request(url, proc.pid, conns, 500, None)  # warm up
            cpu_per_request(url, proc.pid, conns, many * turns, many)  # full-length conversations
            whole: list[object] = [MESSAGE, REPLY] * turns
            one, same, layered = [], [], []
            started = time.monotonic()
            for _ in range(args.rounds):
                one.append(cpu_per_request(url, proc.pid, conns, args.requests, None))
                same.append(cpu_per_request(url, proc.pid, conns, args.requests, None, whole))
                layered.append(cpu_per_request(url, proc.pid, conns, args.requests, many))
            elapsed = time.monotonic() - started
    plain, resent, history = (statistics.median(r) for r in (one, same, layered))
    print(
        f"chatproxy CPU per request on /chatgpt/ ({store.partition(':')[0]} store), {conns} "
        f"connections, medians of {args.rounds} interleaved rounds of {args.requests} "
        f"({elapsed:.0f} s):"
    )
    print(f"  stateless, one message                : {plain:.3f} ms")
    print(f"  stateless, a {turns}-turn conversation resent: {resent:.3f} ms")
    print(
        f"  naming a {turns}-turn conversation        : {history:.3f} ms  "
        f"({history / resent:.2f}x the like-for-like stateless request, "
        f"{history / plain:.2f}x the one-message one)"
    )


if __name__ == "__main__":
    main()
