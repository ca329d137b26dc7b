"""HISTORY_STORE's URL to a store; each driver is imported only when its scheme is chosen."""

from __future__ import annotations

import asyncio
import re

from chatproxy.history.base import DEFAULT_TIMEOUT, HistoryStore

SCHEMES = "sqlite:///path.db, postgresql://…, postgres://…, redis://…, rediss://… or memory://"


async def _keep_session(conn: object) -> None:
    """asyncpg's pool resets a connection on every release, a round trip per query; the
    store leaves nothing behind to reset (no session locks, LISTEN, cursors or SET)."""


def open_store(
    url: str, *, ttl: float | None = None, timeout: float = DEFAULT_TIMEOUT
) -> HistoryStore:
    """The store `url` names, unopened; postgresql:// needs a running loop (asyncpg's pool)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    # Messages name the scheme only: the rest of the URL may hold a password.
    if not sep:
        raise ValueError(f"HISTORY_STORE is not a URL; use {SCHEMES}")
    if ttl is not None and scheme not in ("redis", "rediss"):
        raise ValueError("HISTORY_TTL applies to redis:// and rediss:// stores only")
    if ttl is not None and ttl <= 0:
        raise ValueError(f"HISTORY_TTL must be a positive number of seconds, not {ttl}")
    if timeout <= 0:
        raise ValueError(f"the history store timeout must be positive, not {timeout}")
    if scheme == "memory":
        if rest.strip("/"):
            raise ValueError("memory:// takes no host or path")
        from chatproxy.history.stores.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        if not rest.startswith("/") or not rest[1:]:
            raise ValueError(
                "a SQLite store is sqlite:///relative/path.db or sqlite:////abs/path.db"
            )
        from chatproxy.history.stores.sqlite import SqliteStore

        return SqliteStore(rest[1:], timeout=timeout)
    if scheme in ("postgresql", "postgres"):
        import asyncpg

        from chatproxy.history.stores.postgres import PostgresStore

        # No connection until the first use, so chatproxy starts while PostgreSQL is down.
        pool = asyncpg.create_pool(
            url,
            min_size=0,
            max_size=10,
            timeout=timeout,
            command_timeout=timeout,
            reset=_keep_session,
            loop=asyncio.get_running_loop(),
        )
        return PostgresStore(pool, timeout=timeout)
    if scheme in ("redis", "rediss"):
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from chatproxy.history.stores.redis import RedisStore

        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One immediate retry on a fresh connection (a restarted server), no backoff sleeps.
            retry=Retry(NoBackoff(), 1),
        )
        return RedisStore(client, ttl=ttl, timeout=timeout)
    shown = f" {scheme}://" if re.fullmatch(r"[a-z][a-z0-9+.-]{0,20}", scheme) else ""
    raise ValueError(f"HISTORY_STORE: unknown scheme{shown}; use {SCHEMES}")
