"""Every store on a real server: memory, SQLite in tmp_path, PostgreSQL and Redis on localhost.

PostgreSQL gets a database of its own for the session and a schema of its own per test;
Redis a key prefix per test. Neither is skipped when down: their tests fail. Override the
servers with CHATPROXY_TEST_POSTGRES (a URL to a database that may create databases) and
CHATPROXY_TEST_REDIS.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import redis.asyncio as aioredis

from chatproxy.history import HistoryStore, open_store
from chatproxy.history.stores.redis import RedisStore
from tests.history_stores import POSTGRES, REDIS, admin, run_aside

BACKENDS = ["memory", "sqlite", "postgres", "redis"]
SHARED = ["sqlite", "postgres", "redis"]  # backends two store instances can share
T = TypeVar("T")


def with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[str]:
    """A fresh database for this session, dropped at its end."""
    name = f"chatproxy_test_{uuid.uuid4().hex[:12]}"
    run_aside(admin(f"CREATE DATABASE {name}"))
    try:
        yield with_database(POSTGRES, name)
    finally:
        run_aside(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@dataclass
class Backend:
    """One test's storage; make() gives another store instance on the same storage."""

    kind: str
    url: str = ""
    prefix: str = ""
    made: list[HistoryStore] = field(default_factory=list)

    def make(self, *, timeout: float = 5.0, ttl: float | None = None) -> HistoryStore:
        if self.kind == "redis":
            client = aioredis.Redis.from_url(self.url, socket_timeout=timeout)
            store: HistoryStore = RedisStore(
                client, key_prefix=self.prefix, ttl=ttl, timeout=timeout
            )
        else:
            store = open_store(self.url, timeout=timeout)
        self.made.append(store)
        return store

    async def opened(self, **options: Any) -> HistoryStore:
        store = self.make(**options)
        await store.open()
        return store


async def _postgres_schema(postgres_db: str) -> AsyncIterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(postgres_db, timeout=10)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield f"{postgres_db}?search_path={schema}"
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


async def _redis_prefix() -> AsyncIterator[str]:
    prefix = f"chatproxy-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = aioredis.Redis.from_url(REDIS)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[str], Awaitable[Backend]]]:
    """Builds a Backend of a kind; closes its stores and removes its data afterwards."""
    backends: list[Backend] = []
    cleanups: list[AsyncIterator[str]] = []

    async def build(kind: str) -> Backend:
        backend = Backend(kind)
        if kind == "memory":
            backend.url = "memory://"
        elif kind == "sqlite":
            backend.url = f"sqlite:///{tmp_path / f'history-{len(backends)}.db'}"
        elif kind == "postgres":
            cleanup = _postgres_schema(request.getfixturevalue("postgres_db"))
            backend.url = await anext(cleanup)
            cleanups.append(cleanup)
        else:
            cleanup = _redis_prefix()
            backend.url, backend.prefix = REDIS, await anext(cleanup)
            cleanups.append(cleanup)
        backends.append(backend)
        return backend

    yield build
    for backend in backends:
        for store in backend.made:
            # A test may have closed it already, or made its server fail.
            with contextlib.suppress(Exception):
                await store.close()
    for cleanup in cleanups:
        async for _ in cleanup:
            pass


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, storage: Callable[[str], Awaitable[Backend]]
) -> Backend:
    return await storage(request.param)


@pytest.fixture(params=SHARED)
async def shared(
    request: pytest.FixtureRequest, storage: Callable[[str], Awaitable[Backend]]
) -> Backend:
    return await storage(request.param)


@pytest.fixture
async def store(backend: Backend) -> HistoryStore:
    return await backend.opened()
