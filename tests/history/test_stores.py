"""Around the contract: URLs, lazy drivers, the schema, stores that are down or slow, TTL."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from chatproxy.history import (
    HistoryStore,
    SchemaVersionError,
    StoredMessage,
    StoreUnavailableError,
    open_store,
    valid_conversation_id,
)
from chatproxy.history.stores.memory import MemoryStore
from chatproxy.history.stores.postgres import PostgresStore
from chatproxy.history.stores.redis import RedisStore
from chatproxy.history.stores.sqlite import SqliteStore
from tests.history.conftest import Backend
from tests.history_stores import REDIS, silent_port

__all__ = ["silent_port"]  # a fixture, used by name

TURN = [
    StoredMessage("user", "hi", datetime.now(UTC)),
    StoredMessage("assistant", "hey", datetime.now(UTC)),
]


async def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    cases: list[tuple[str, dict[str, Any], type[HistoryStore]]] = [
        ("memory://", {}, MemoryStore),
        (f"sqlite:///{tmp_path}/a.db", {}, SqliteStore),
        ("sqlite:///relative.db", {}, SqliteStore),
        ("postgresql://u:p@localhost:5432/db", {}, PostgresStore),
        ("postgres://localhost/db", {}, PostgresStore),
        ("redis://localhost:6379/0", {"ttl": 60}, RedisStore),
        ("rediss://localhost:6379/0", {}, RedisStore),
    ]
    for url, options, kind in cases:
        store = open_store(url, **options)
        assert type(store) is kind
        if isinstance(store, SqliteStore):
            continue  # never opened: no thread, nothing to close
        await store.close()


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("mysql://root:hunter2@db/x", {}, "unknown scheme mysql://"),
        ("hunter2@db", {}, "not a URL"),
        ("sqlite://", {}, "sqlite:///"),
        ("sqlite:///", {}, "sqlite:///"),
        ("sqlite://host/x.db", {}, "sqlite:///"),
        ("memory://x", {}, "no host"),
        ("sqlite:///x.db", {"ttl": 10}, "redis"),
        ("redis://localhost", {"ttl": 0}, "positive"),
        ("memory://", {"timeout": 0}, "positive"),
    ],
)
def test_open_store_refuses_bad_urls(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        open_store(url, **options)
    assert "hunter2" not in str(info.value)


def test_importing_the_package_imports_no_driver() -> None:
    code = (
        "import sys, chatproxy.history, chatproxy.history.url; "
        "print(sorted(m for m in ('sqlite3', 'asyncpg', 'redis') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_valid_conversation_id() -> None:
    assert valid_conversation_id("a" * 128)
    assert valid_conversation_id("Az09._:/-")
    for bad in ("", "a" * 129, "a b", "ä", "a{b}", "a\n", "a?b"):
        assert not valid_conversation_id(bad)


async def raw(backend: Backend, sql: str) -> list[Any]:
    """Run SQL on a SQL backend's storage behind the store's back."""
    if backend.kind == "sqlite":
        with sqlite3.connect(backend.url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql).fetchall()
    conn = await asyncpg.connect(backend.url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def schema_version(backend: Backend, bump: bool = False) -> int:
    if backend.kind == "redis":
        client = aioredis.Redis.from_url(REDIS)
        try:
            key = f"{backend.prefix}schema_version"
            if bump:
                await client.set(key, 99)
            return int(await client.get(key) or 0)
        finally:
            await client.aclose()
    if bump:
        await raw(backend, "UPDATE chatproxy_schema_version SET version = 99")
    rows = await raw(backend, "SELECT version FROM chatproxy_schema_version")
    assert len(rows) == 1
    return int(rows[0][0])


async def test_schema_created_once_and_reopened(shared: Backend) -> None:
    stores = [shared.make() for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))  # racing to create the schema
    assert await stores[0].append_turn("kept", "alice", TURN)
    for s in stores:
        await s.close()
    assert await schema_version(shared) == 1
    again = await shared.opened()
    assert await again.messages("kept", "alice") == TURN
    assert await schema_version(shared) == 1


async def test_a_newer_schema_is_refused(shared: Backend) -> None:
    await (await shared.opened()).close()
    assert await schema_version(shared, bump=True) == 99
    with pytest.raises(SchemaVersionError, match="99"):
        await shared.make().open()


async def test_sqlite_runs_in_wal_mode(storage: Any) -> None:
    backend: Backend = await storage("sqlite")
    store = await backend.opened()
    await store.append_turn("c", "", TURN)
    assert (await raw(backend, "PRAGMA journal_mode"))[0][0] == "wal"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def urls(port: int) -> list[str]:
    return [f"postgresql://postgres@127.0.0.1:{port}/test", f"redis://127.0.0.1:{port}/0"]


async def assert_unavailable(store: HistoryStore, *, at_least: float, at_most: float) -> None:
    operations: list[Callable[[], Awaitable[object]]] = [
        store.open,
        store.ping,
        lambda: store.info("c", "o"),
        lambda: store.recent_turns("c", "o", 5),
        lambda: store.append_turn("c", "o", TURN),
    ]
    for operation in operations:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await operation()
        assert at_least <= time.monotonic() - started < at_most


async def test_a_store_that_is_down(tmp_path: Path) -> None:
    port = closed_port()
    for url in [*urls(port), f"sqlite:///{tmp_path}/no/such/folder/h.db"]:
        store = open_store(url, timeout=5)
        await assert_unavailable(store, at_least=0, at_most=1)
        await store.close()


async def test_a_store_that_does_not_answer(silent_port: int) -> None:
    for url in urls(silent_port):
        store = open_store(url, timeout=0.3)
        await assert_unavailable(store, at_least=0.25, at_most=1.5)
        await store.close()


async def test_sqlite_locked_by_another_process(storage: Any) -> None:
    backend: Backend = await storage("sqlite")
    store = await backend.opened(timeout=0.3)
    path = backend.url.removeprefix("sqlite:///")
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await store.append_turn("c", "o", TURN)
        assert 0.2 <= time.monotonic() - started < 1.5
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    await asyncio.sleep(0.3)  # the timed-out write may still be queued on the store's thread
    assert await store.append_turn("c", "o", TURN)


async def test_a_closed_store_is_unavailable(backend: Backend) -> None:
    store = await backend.opened()
    await store.close()
    for operation in (store.ping, lambda: store.append_turn("c", "o", TURN)):
        with pytest.raises(StoreUnavailableError):
            await operation()


async def test_redis_ttl(storage: Any) -> None:
    backend: Backend = await storage("redis")
    store = await backend.opened(ttl=1)
    await store.create("made", "o", "x/y")
    await store.append_turn("kept", "o", TURN)
    await asyncio.sleep(0.6)
    await store.append_turn("kept", "o", TURN)  # refreshes the TTL
    await asyncio.sleep(0.6)
    assert await store.info("made", "o") is None
    assert await store.messages("kept", "o") == TURN + TURN
    await asyncio.sleep(1.1)
    assert await store.messages("kept", "o") is None
    client = aioredis.Redis.from_url(REDIS)
    try:
        assert [key async for key in client.scan_iter(match=f"{backend.prefix}*:*")] == []
    finally:
        await client.aclose()


async def test_postgres_query_stuck_on_a_lock_times_out_and_the_pool_recovers(
    storage: Any,
) -> None:
    backend: Backend = await storage("postgres")
    store = await backend.opened(timeout=0.3)
    assert await store.append_turn("c", "o", TURN)
    locker = await asyncpg.connect(backend.url)
    try:
        async with locker.transaction():
            await locker.execute("SELECT 1 FROM chatproxy_conversations WHERE id = 'c' FOR UPDATE")
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match=r"0\.3 s"):
                await store.append_turn("c", "o", TURN)
            assert 0.25 <= time.monotonic() - started < 1.5
            assert await store.messages("c", "o") == TURN  # reads do not wait for the lock
    finally:
        await locker.close()
    assert await store.append_turn("c", "o", TURN)
    assert await store.messages("c", "o") == TURN + TURN
