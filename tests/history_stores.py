"""The store URLs the through-the-app history tests run on: every backend, on real servers.

Conversation ids are unique per test, so one PostgreSQL database (made for the session and
dropped after) and one Redis database serve every test.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Coroutine, Iterator
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


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def app_postgres() -> Iterator[str]:
    """A PostgreSQL database for this session's app tests, dropped at the end."""
    name = f"chatproxy_app_{uuid.uuid4().hex[:12]}"
    run_aside(_admin(f"CREATE DATABASE {name}"))
    try:
        yield f"{POSTGRES.rpartition('/')[0]}/{name}"
    finally:
        run_aside(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def store_url(kind: str, tmp_path: Path, postgres: str = "") -> str:
    return {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp_path / 'history.db'}",
        "postgres": postgres,
        "redis": REDIS,
    }[kind]
