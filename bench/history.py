"""History stores under load: append and fetch with 10 thousand and 1 million messages stored.

For each store (SQLite on a temporary file; PostgreSQL in a temporary database, as
configured and as `postgres-nosync` with synchronous_commit=off; Redis under a temporary key
prefix) and each size, the store is filled in bulk with two-message turns: a tenth of them
in one big conversation, the rest in 20-turn (40-message) conversations. Then, one
operation at a time through the store's API, the sizes taking turns round by round:
`append` a turn to a 20-turn conversation, `append big` to the big one, `fetch` the last
20 turns (40 messages) of a 20-turn conversation, `fetch big` the last 20 of the big one,
and `ping`, the store's cheapest round trip, as the floor the machine allows. It prints
p50 and p99 in milliseconds, and the ratio of the largest size's figures to the smallest's.
The loop and the collector are set up as the served process has them (uvloop, gc frozen).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from chatproxy.__main__ import new_loop
from chatproxy.history import HistoryStore, StoredMessage, open_store
from chatproxy.history.codec import encode_turn
from chatproxy.history.stores.redis import RedisStore

OPS = ("ping", "append", "append big", "fetch", "fetch big")
TURNS_PER_CONVERSATION = 20
BIG = "big"
Operation = Callable[[int], Awaitable[object]]


def turn(i: int) -> list[StoredMessage]:
    now = datetime.now(UTC)
    question = f"Question {i}: how does one keep a conversation on the server? " * 2
    return [
        StoredMessage("user", question, now, "chatgpt/gpt-4o-mini"),
        StoredMessage("assistant", f"Answer {i}: " + "in one row per turn. " * 20, now, "x/y"),
    ]


@dataclass
class Layout:
    """Where `messages` stored messages go: (conversation id, turns) pairs."""

    messages: int

    def conversations(self) -> Iterator[tuple[str, int]]:
        turns = self.messages // 2
        big = max(turns // 10, TURNS_PER_CONVERSATION)
        yield BIG, big
        for n in range((turns - big) // TURNS_PER_CONVERSATION):
            yield f"c{n}", TURNS_PER_CONVERSATION

    def small(self) -> int:
        return sum(1 for cid, _ in self.conversations() if cid != BIG)


ENCODED = [encode_turn(turn(i)) for i in range(100)]


def sqlite_fill(path: str, layout: Layout) -> None:
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(path) as conn:
        conversations = list(layout.conversations())
        conn.executemany(
            "INSERT INTO chatproxy_conversations VALUES (?, '', NULL, ?)",
            ((cid, now) for cid, _ in conversations),
        )
        conn.executemany(
            "INSERT INTO chatproxy_turns VALUES (?, ?, ?)",
            ((cid, s, ENCODED[s % 100]) for cid, n in conversations for s in range(1, n + 1)),
        )
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def postgres_fill(url: str, layout: Layout) -> None:
    conn = await asyncpg.connect(url)
    try:
        conversations = list(layout.conversations())
        now = datetime.now(UTC)
        await conn.copy_records_to_table(
            "chatproxy_conversations",
            records=[(cid, "", None, now, n) for cid, n in conversations],
            columns=["id", "owner", "model", "created_at", "last_seq"],
        )
        await conn.copy_records_to_table(
            "chatproxy_turns",
            records=[(c, s, ENCODED[s % 100]) for c, n in conversations for s in range(1, n + 1)],
        )
        # Settle what a bulk load leaves behind (autovacuum, a checkpoint flushing it all),
        # so that the timings that follow measure the store, not the load's aftermath.
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def redis_fill(url: str, prefix: str, layout: Layout) -> None:
    client = aioredis.Redis.from_url(url)
    now = datetime.now(UTC).isoformat()
    try:
        pipe = client.pipeline(transaction=False)
        for cid, n in layout.conversations():
            pipe.hset(f"{prefix}conv:{{{cid}}}", mapping={"owner": "", "created_at": now})
            for start in range(0, n, 1000):
                chunk = [ENCODED[s % 100] for s in range(start, min(n, start + 1000))]
                pipe.rpush(f"{prefix}turns:{{{cid}}}", *chunk)
            if len(pipe) >= 2000:
                await pipe.execute()
        await pipe.execute()
    finally:
        await client.aclose()


async def redis_drop(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                await client.unlink(*batch)
                batch = []
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


async def postgres_admin(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def operations(store: HistoryStore, layout: Layout) -> dict[str, Operation]:
    small = layout.small()
    appended = [f"c{n}" for n in range(small // 2)]  # the other half is only fetched
    fetched = [f"c{n}" for n in range(small // 2, small)]
    return {
        "ping": lambda i: store.ping(),
        "append": lambda i: store.append_turn(appended[i % len(appended)], "", turn(i)),
        "append big": lambda i: store.append_turn(BIG, "", turn(i)),
        "fetch": lambda i: store.recent_turns(fetched[i % len(fetched)], "", 20),
        "fetch big": lambda i: store.recent_turns(BIG, "", 20),
    }


async def measure(
    stores: dict[int, HistoryStore], rounds: int
) -> dict[tuple[int, str], list[float]]:
    """Milliseconds per (size, operation): the sizes take turns, round by round, so that
    a machine whose speed drifts slows them alike; a tenth as many rounds first, unrecorded."""
    runs = {size: operations(store, Layout(size)) for size, store in stores.items()}
    for size, store in stores.items():
        last = f"c{Layout(size).small() - 1}"
        assert len(await store.recent_turns(last, "", 20) or []) == 20, size
    samples: dict[tuple[int, str], list[float]] = {(s, op): [] for s in stores for op in OPS}
    gc.collect()
    gc.freeze()
    for i in range(-(rounds // 10), rounds):
        for size, ops in runs.items():
            for op, run in ops.items():
                started = time.perf_counter()
                await run(i)
                if i >= 0:
                    samples[size, op].append((time.perf_counter() - started) * 1000)
    gc.unfreeze()
    return samples


@asynccontextmanager
async def filled(kind: str, size: int, args: argparse.Namespace) -> AsyncIterator[HistoryStore]:
    """An opened store of `kind` holding `size` messages, all of it removed afterwards."""
    layout = Layout(size)
    started = time.perf_counter()
    store: HistoryStore
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "history.db")
            store = open_store(f"sqlite:///{path}")
            await store.open()
            try:
                await asyncio.to_thread(sqlite_fill, path, layout)
                report(kind, size, started)
                yield store
            finally:
                await store.close()
    elif kind.startswith("postgres"):
        name = f"chatproxy_bench_{uuid.uuid4().hex[:12]}"
        await postgres_admin(args.postgres, f"CREATE DATABASE {name}")
        url = args.postgres.rpartition("/")[0] + f"/{name}"
        try:
            # postgres-nosync: commits return before their WAL reaches the disk (a server
            # crash may lose the last ~0.6 s of turns; a chatproxy crash loses nothing).
            store = open_store(url + ("?synchronous_commit=off" if "nosync" in kind else ""))
            await store.open()
            try:
                await postgres_fill(url, layout)
                report(kind, size, started)
                yield store
            finally:
                await store.close()
        finally:
            await postgres_admin(args.postgres, f"DROP DATABASE {name} WITH (FORCE)")
    else:
        prefix = f"chatproxy-bench-{uuid.uuid4().hex[:12]}:"
        store = RedisStore(aioredis.Redis.from_url(args.redis), key_prefix=prefix)
        try:
            await store.open()
            await redis_fill(args.redis, prefix, layout)
            report(kind, size, started)
            yield store
        finally:
            await store.close()
            await redis_drop(args.redis, prefix)


def report(kind: str, size: int, started: float) -> None:
    took = time.perf_counter() - started
    print(f"  {kind}: {size:,} messages stored in {took:.1f} s", flush=True)


def quantiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98]


async def main(args: argparse.Namespace) -> None:
    sizes = sorted(args.sizes)
    results: dict[tuple[str, int, str], list[float]] = {}
    for kind in args.stores:
        async with AsyncExitStack() as stack:
            stores = {
                size: await stack.enter_async_context(filled(kind, size, args)) for size in sizes
            }
            for (size, op), samples in (await measure(stores, args.rounds)).items():
                results[kind, size, op] = samples
    low, high = sizes[0], sizes[-1]
    print(f"\nms per operation, {args.rounds} of each; ratio = {high:,} / {low:,} messages stored")
    print(f"{'store':16}{'operation':12}{'size':>11}{'p50':>8}{'p99':>8}")
    for kind in args.stores:
        for op in OPS:
            figures = {size: quantiles(results[kind, size, op]) for size in sizes}
            for size in sizes:
                p50, p99 = figures[size]
                print(f"{kind:16}{op:12}{size:>11,}{p50:>8.3f}{p99:>8.3f}")
            (l50, l99), (h50, h99) = figures[low], figures[high]
            print(f"{kind:16}{op:12}{'ratio':>11}{h50 / l50:>7.2f}x{h99 / l99:>7.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[10_000, 1_000_000],
        help="messages stored, comma-separated",
    )
    parser.add_argument(
        "--stores",
        type=lambda s: s.split(","),
        default=["sqlite", "postgres", "postgres-nosync", "redis"],
        help="comma-separated",
    )
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@localhost:5432/postgres",
        help="a database of a server where the bench may create databases",
    )
    parser.add_argument("--redis", default="redis://localhost:6379/0")
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(main(parser.parse_args()))
