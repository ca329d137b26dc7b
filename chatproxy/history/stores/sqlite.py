"""SQLite through aiosqlite: the embedded store.

Guarantees: WAL mode with synchronous=NORMAL, so a turn survives the process being killed
the moment it is committed, while a power cut or OS crash may lose the last few
(`synchronous="FULL"` keeps those too, at an fsync per write). A turn is one row written
by one INSERT … SELECT that takes its sequence number under SQLite's write lock, so it is
atomic, and concurrent writers, in this process or in others on the same file, queue for
the lock and never interleave; readers never wait for writers. A writer that waits for
another process's lock gives up (SQLite's busy timeout, set just under `timeout`) and gets
StoreUnavailableError, having written nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiosqlite

from chatproxy.history.base import (
    DEFAULT_TIMEOUT,
    ConversationInfo,
    HistoryStore,
    SchemaVersionError,
    StoredMessage,
    StoreUnavailableError,
    check_limit,
    unavailable_on,
    utc_now,
)
from chatproxy.history.codec import decode_turn, encode_turn

SCHEMA_VERSION = 1
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chatproxy_schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE chatproxy_conversations (id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
    " model TEXT, created_at TEXT NOT NULL)",
    "CREATE TABLE chatproxy_turns (conversation_id TEXT NOT NULL"
    " REFERENCES chatproxy_conversations (id) ON DELETE CASCADE, seq INTEGER NOT NULL,"
    " messages TEXT NOT NULL, PRIMARY KEY (conversation_id, seq))",
)
ERRORS = (sqlite3.OperationalError, ValueError)  # aiosqlite says ValueError once closed
CREATE = (
    "INSERT INTO chatproxy_conversations (id, owner, model, created_at)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING id"
)
APPEND = (
    "INSERT INTO chatproxy_turns (conversation_id, seq, messages)"
    " SELECT id, COALESCE((SELECT MAX(seq) FROM chatproxy_turns WHERE conversation_id = :id),"
    " 0) + 1, :messages FROM chatproxy_conversations WHERE id = :id AND owner = :owner"
    " RETURNING seq"
)
# A marker row (seq 0) says the conversation exists for this owner; turns follow.
TURNS = (
    "SELECT 0, NULL FROM chatproxy_conversations WHERE id = :id AND owner = :owner"
    " UNION ALL SELECT * FROM (SELECT seq, messages FROM chatproxy_turns"
    " WHERE conversation_id = :id ORDER BY seq DESC LIMIT :limit)"
)
OWNED = "SELECT 1 FROM chatproxy_conversations WHERE id = :id AND owner = :owner"


def _turns(rows: Iterable[Any]) -> list[list[StoredMessage]] | None:
    rows = sorted(rows)
    if not rows or rows[0][0] != 0:
        return None
    return [decode_turn(messages) for _, messages in rows[1:]]


class SqliteStore(HistoryStore):
    """`conn`: aiosqlite.connect(path, isolation_level=None), not yet awaited."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        synchronous: str = "NORMAL",
    ) -> None:
        self._conn = conn
        self._timeout = timeout
        self._synchronous = synchronous
        self._started = False
        self._connected = False
        self._ready = False
        self._setup_lock = asyncio.Lock()

    async def _setup(self) -> None:
        if not self._connected:
            await self._connect()
        if self._conn.isolation_level is not None:
            raise RuntimeError("SqliteStore needs aiosqlite.connect(..., isolation_level=None)")
        while True:
            try:
                await self._migrate()
                break
            except sqlite3.OperationalError as exc:
                # Another connection turning a new file to WAL makes this one's switch
                # fail at once, without the busy timeout: try again (our timeout bounds it).
                if "locked" not in str(exc):
                    raise
                await asyncio.sleep(0.01)
        self._ready = True

    async def _connect(self) -> None:
        # aiosqlite starts its thread once: a connection that failed to open stays failed.
        if self._started:
            raise StoreUnavailableError("SQLite could not open the database")
        self._started = True
        try:
            await self._conn
        except BaseException:
            # aiosqlite stops its thread without waiting for it; wait, so that the
            # thread's last callback never finds this loop closed.
            thread = getattr(self._conn, "_thread", None)
            if isinstance(thread, threading.Thread):
                await asyncio.to_thread(thread.join, 1.0)
            raise
        self._connected = True

    async def _migrate(self) -> None:
        run = self._conn.execute_fetchall
        # Let SQLite give up on a lock a little before our own timeout does.
        await run(f"PRAGMA busy_timeout = {int(self._timeout * 800)}")
        await run("PRAGMA journal_mode = WAL")
        await run(f"PRAGMA synchronous = {self._synchronous}")
        await run("PRAGMA foreign_keys = ON")
        await run("BEGIN IMMEDIATE")
        try:
            await run(SCHEMA[0])
            [(version,)] = await run("SELECT MAX(version) FROM chatproxy_schema_version")
            if version is None:
                for statement in SCHEMA[1:]:
                    await run(statement)
                await run("INSERT INTO chatproxy_schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif version > SCHEMA_VERSION:
                raise SchemaVersionError(version, SCHEMA_VERSION)
            await run("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await run("ROLLBACK")
            raise

    @asynccontextmanager
    async def _use(self) -> AsyncIterator[aiosqlite.Connection]:
        async with unavailable_on("SQLite", self._timeout, ERRORS):
            if not self._ready:
                async with self._setup_lock:
                    if not self._ready:
                        await self._setup()
            yield self._conn

    async def _fetch(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Any]:
        async with self._use() as conn:
            return list(await conn.execute_fetchall(sql, params))

    async def open(self) -> None:
        async with self._use():
            pass

    async def close(self) -> None:
        if self._started:
            async with unavailable_on("SQLite", self._timeout, ERRORS):
                await self._conn.close()

    async def ping(self) -> None:
        await self._fetch("SELECT 1", ())

    async def create(self, conversation_id: str, owner: str, model: str | None = None) -> bool:
        params = (conversation_id, owner, model, utc_now().isoformat())
        return bool(await self._fetch(CREATE, params))

    async def info(self, conversation_id: str, owner: str) -> ConversationInfo | None:
        rows = await self._fetch(
            "SELECT model, created_at FROM chatproxy_conversations WHERE id = ? AND owner = ?",
            (conversation_id, owner),
        )
        if not rows:
            return None
        model, created_at = rows[0]
        return ConversationInfo(conversation_id, owner, model, datetime.fromisoformat(created_at))

    async def recent_turns(
        self, conversation_id: str, owner: str, limit: int
    ) -> list[list[StoredMessage]] | None:
        check_limit(limit)
        params = {"id": conversation_id, "owner": owner, "limit": limit}
        return _turns(await self._fetch(TURNS, params))

    async def messages(self, conversation_id: str, owner: str) -> list[StoredMessage] | None:
        params = {"id": conversation_id, "owner": owner, "limit": -1}
        turns = _turns(await self._fetch(TURNS, params))
        return None if turns is None else [message for turn in turns for message in turn]

    async def append_turn(
        self, conversation_id: str, owner: str, turn: Sequence[StoredMessage]
    ) -> bool:
        params = {"id": conversation_id, "owner": owner, "messages": encode_turn(turn)}
        if await self._fetch(APPEND, params):
            return True
        await self._fetch(CREATE, (conversation_id, owner, None, utc_now().isoformat()))
        return bool(await self._fetch(APPEND, params))

    async def clear(self, conversation_id: str, owner: str) -> bool:
        params = {"id": conversation_id, "owner": owner}
        await self._fetch(
            f"DELETE FROM chatproxy_turns WHERE conversation_id = :id AND EXISTS ({OWNED})", params
        )
        return bool(await self._fetch(OWNED, params))

    async def delete(self, conversation_id: str, owner: str) -> bool:
        sql = "DELETE FROM chatproxy_conversations WHERE id = ? AND owner = ? RETURNING id"
        return bool(await self._fetch(sql, (conversation_id, owner)))

    async def set_model(self, conversation_id: str, owner: str, model: str | None) -> bool:
        sql = "UPDATE chatproxy_conversations SET model = ? WHERE id = ? AND owner = ? RETURNING id"
        return bool(await self._fetch(sql, (model, conversation_id, owner)))
