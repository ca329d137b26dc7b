"""The history stores' real servers, for the store suite (tests/history) and the app's tests:
where PostgreSQL and Redis are, a database per session, a store that never answers.

Conversation ids are unique per test, so one PostgreSQL database (made for the session and
dropped after) and one Redis database serve every test.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

POSTGRES = os.environ.get(
    "CHATPROXY_TEST_POSTGRES", "postgresql://postgres@localhost:5432/postgres"
)
REDIS = os.environ.get("CHATPROXY_TEST_REDIS", "redis://localhost:6379/0")
STORE_URLS = ["memory", "sqlite", "postgres", "redis"]
T = TypeVar("T")


def run_aside(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a loop of its own thread, leaving the tests' event loops alone."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def admin(sql: str) -> None:
    """One statement on the PostgreSQL server as its administrator (CREATE/DROP DATABASE)."""
    conn = await asyncpg.connect(POSTGRES, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A server that accepts connections and never answers: a store that hangs."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.fixture(scope="session")
def app_postgres() -> Iterator[str]:
    """A PostgreSQL database for this session's app tests, dropped at the end."""
    name = f"chatproxy_app_{uuid.uuid4().hex[:12]}"
    run_aside(admin(f"CREATE DATABASE {name}"))
    try:
        yield f"{POSTGRES.rpartition('/')[0]}/{name}"
    finally:
        run_aside(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def store_url(kind: str, tmp_path: Path, postgres: str = "") -> str:
    return {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp_path / 'history.db'}",
        "postgres": postgres,
        "redis": REDIS,
    }[kind]
