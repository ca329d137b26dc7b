"""SQLite: the embedded store, its statements run on the event loop's own thread.

Why on the loop: an indexed read or an INSERT on a WAL database costs 4-25 µs of CPU, and
handing one to a thread (aiosqlite, asyncio.to_thread) costs 80-90 µs more on a 2-core
machine — a request that recalls a conversation and appends a turn paid twice that, which
more than doubled chatproxy's CPU per request. What can take long leaves the loop: waiting
for another process's write lock (the loop's connection never waits: a statement that
finds the database locked is run again on a thread, whose connection waits for up to
`timeout`), and WAL checkpoints (off on the loop's connection; a thread runs a passive one
every CHECKPOINT_EVERY writes, and a full one at close).

Guarantees: WAL mode with synchronous=NORMAL, so a turn survives the process being killed
the moment it is committed, while a power cut or OS crash may lose the last few
(`synchronous="FULL"` keeps those too, at an fsync per write). A turn is one row written by
one INSERT … SELECT that takes its sequence number under SQLite's write lock, so it is
atomic, and concurrent writers, in this process or in others on the same file, queue for
the lock and never interleave; readers never wait for writers. A writer that waits longer
than `timeout` for another process's lock gets StoreUnavailableError, having written nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from chatproxy.history.base import (
    DEFAULT_TIMEOUT,
    ConversationInfo,
    HistoryStore,
    Recalled,
    SchemaVersionError,
    StoredMessage,
    StoreUnavailableError,
    check_limit,
    unavailable_on,
    utc_now,
)
from chatproxy.history.codec import decode_turn, encode_turn, recalled

SCHEMA_VERSION = 1
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chatproxy_schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE chatproxy_conversations (id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
    " model TEXT, created_at TEXT NOT NULL)",
    "CREATE TABLE chatproxy_turns (conversation_id TEXT NOT NULL"
    " REFERENCES chatproxy_conversations (id) ON DELETE CASCADE, seq INTEGER NOT NULL,"
    " messages TEXT NOT NULL, PRIMARY KEY (conversation_id, seq))",
)
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
# A marker row (seq 0, the conversation's model) says the conversation exists for this
# owner; turns follow.
TURNS = (
    "SELECT 0, model FROM chatproxy_conversations WHERE id = :id AND owner = :owner"
    " UNION ALL SELECT * FROM (SELECT seq, messages FROM chatproxy_turns"
    " WHERE conversation_id = :id ORDER BY seq DESC LIMIT :limit)"
)
# TURNS, and the first turn too: its instructions outlive the window (recall).
RECALL = (
    TURNS + " UNION SELECT * FROM (SELECT seq, messages FROM chatproxy_turns"
    " WHERE conversation_id = :id ORDER BY seq LIMIT 1)"
)
OWNED = "SELECT 1 FROM chatproxy_conversations WHERE id = :id AND owner = :owner"
# Writes between passive checkpoints: about SQLite's own default of 1,000 WAL pages.
CHECKPOINT_EVERY = 500
Params = Sequence[Any] | dict[str, Any]


def _texts(rows: list[Any]) -> list[str] | None:
    """The encoded turns, oldest first, behind the marker row; None without it."""
    rows.sort()
    if not rows or rows[0][0] != 0:
        return None
    return [messages for _, messages in rows[1:]]


def _turns(rows: list[Any]) -> list[list[StoredMessage]] | None:
    texts = _texts(rows)
    return None if texts is None else [decode_turn(text) for text in texts]


def _locked(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteStore(HistoryStore):
    """A database file; `path` as sqlite3.connect takes it."""

    def __init__(
        self, path: str, *, timeout: float = DEFAULT_TIMEOUT, synchronous: str = "NORMAL"
    ) -> None:
        self._path = path
        self._timeout = timeout
        self._synchronous = synchronous
        self._loop_conn: sqlite3.Connection | None = None  # never waits for a lock
        self._thread_conn: sqlite3.Connection | None = None  # waits, on a thread
        self._thread_lock = threading.Lock()
        self._setup_lock = asyncio.Lock()
        self._closed = False
        self._failures = 0  # set-up attempts that failed
        self._writes = 0
        self._checkpoint: asyncio.Future[None] | None = None

    def _connect(self, busy_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _setup(self) -> None:
        """On a thread: connect, switch to WAL, create or check the schema."""
        # Let SQLite give up on a lock a little before our own timeout does.
        waiting = self._connect(busy_ms=int(self._timeout * 800))
        deadline = time.monotonic() + self._timeout
        try:
            while True:
                try:
                    self._migrate(waiting)
                    break
                except sqlite3.OperationalError as exc:
                    # Another connection turning a new file to WAL makes this one's switch
                    # fail at once, without the busy timeout: try again, within ours.
                    if not _locked(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            on_loop = self._connect(busy_ms=0)
            on_loop.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            waiting.close()
            raise
        self._thread_conn, self._loop_conn = waiting, on_loop

    @staticmethod
    def _migrate(waiting: sqlite3.Connection) -> None:
        waiting.execute("PRAGMA journal_mode = WAL")
        waiting.execute("BEGIN IMMEDIATE")
        try:
            waiting.execute(SCHEMA[0])
            [(version,)] = waiting.execute(
                "SELECT MAX(version) FROM chatproxy_schema_version"
            ).fetchall()
            if version is None:
                for statement in SCHEMA[1:]:
                    waiting.execute(statement)
                waiting.execute(
                    "INSERT INTO chatproxy_schema_version VALUES (?)", (SCHEMA_VERSION,)
                )
            elif version > SCHEMA_VERSION:
                raise SchemaVersionError(version, SCHEMA_VERSION)
            waiting.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                waiting.execute("ROLLBACK")
            raise

    async def open(self) -> None:
        if self._loop_conn is not None:
            return
        attempt = self._failures
        async with self._setup_lock:
            if self._closed:
                raise StoreUnavailableError("SQLite store is closed")
            if self._failures != attempt:
                # It failed while this request waited: fail with it rather than queue up
                # another whole attempt (the k-th waiter would wait k timeouts).
                raise StoreUnavailableError("SQLite could not open the database")
            if self._loop_conn is None:
                try:
                    async with unavailable_on("SQLite", self._timeout, (sqlite3.Error, OSError)):
                        await asyncio.to_thread(self._locked_setup)
                except StoreUnavailableError:
                    self._failures += 1
                    raise

    def _locked_setup(self) -> None:
        with self._thread_lock:
            if self._loop_conn is None:
                self._setup()

    async def _run(self, sql: str, params: Params, *, write: bool = False) -> list[Any]:
        """`sql` on the loop's connection; on another process's lock, on a thread."""
        if self._loop_conn is None:
            await self.open()
        conn = self._loop_conn
        if conn is None:  # closed meanwhile
            raise StoreUnavailableError("SQLite store is closed")
        try:
            rows = conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise StoreUnavailableError(f"SQLite failed: {exc}") from exc
            rows = await self._run_waiting(sql, params)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite failed: {exc}") from exc
        if write:
            self._wrote()
        return rows

    async def _run_waiting(self, sql: str, params: Params) -> list[Any]:
        def run() -> list[Any]:
            with self._thread_lock:
                if self._thread_conn is None:
                    raise sqlite3.OperationalError("closed")
                return self._thread_conn.execute(sql, params).fetchall()

        async with unavailable_on("SQLite", self._timeout, (sqlite3.Error,)):
            return await asyncio.to_thread(run)

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % CHECKPOINT_EVERY == 0 and (
            self._checkpoint is None or self._checkpoint.done()
        ):
            self._checkpoint = asyncio.ensure_future(asyncio.to_thread(self._checkpoint_now))

    def _checkpoint_now(self, mode: str = "PASSIVE") -> None:
        with self._thread_lock, contextlib.suppress(sqlite3.Error):
            if self._thread_conn is not None:
                self._thread_conn.execute(f"PRAGMA wal_checkpoint({mode})")

    async def close(self) -> None:
        self._closed = True
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint
        loop_conn, self._loop_conn = self._loop_conn, None
        if loop_conn is not None:
            loop_conn.close()
            await asyncio.to_thread(self._close_thread_conn)

    def _close_thread_conn(self) -> None:
        self._checkpoint_now("TRUNCATE")
        with self._thread_lock:
            if self._thread_conn is not None:
                self._thread_conn.close()
                self._thread_conn = None

    async def ping(self) -> None:
        await self._run("SELECT 1", ())

    async def create(self, conversation_id: str, owner: str, model: str | None = None) -> bool:
        params = (conversation_id, owner, model, utc_now().isoformat())
        return bool(await self._run(CREATE, params, write=True))

    async def info(self, conversation_id: str, owner: str) -> ConversationInfo | None:
        rows = await self._run(
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
        return _turns(await self._run(TURNS, params))

    async def recall(self, conversation_id: str, owner: str, limit: int) -> Recalled | None:
        check_limit(limit)
        params = {"id": conversation_id, "owner": owner, "limit": limit}
        rows = await self._run(RECALL, params)  # UNION: the first turn comes once
        texts = _texts(rows)
        if texts is None:
            return None
        model = rows[0][1]
        if len(texts) > limit:  # the first turn lies before the window
            return recalled(texts[1:], model, first=texts[0])
        return recalled(texts, model)

    async def messages(self, conversation_id: str, owner: str) -> list[StoredMessage] | None:
        params = {"id": conversation_id, "owner": owner, "limit": -1}
        turns = _turns(await self._run(TURNS, params))
        return None if turns is None else [message for turn in turns for message in turn]

    async def append_turn(
        self, conversation_id: str, owner: str, turn: Sequence[StoredMessage]
    ) -> bool:
        params = {"id": conversation_id, "owner": owner, "messages": encode_turn(turn)}
        if await self._run(APPEND, params, write=True):
            return True
        await self._run(CREATE, (conversation_id, owner, None, utc_now().isoformat()), write=True)
        return bool(await self._run(APPEND, params, write=True))

    async def clear(self, conversation_id: str, owner: str) -> bool:
        params = {"id": conversation_id, "owner": owner}
        await self._run(
            f"DELETE FROM chatproxy_turns WHERE conversation_id = :id AND EXISTS ({OWNED})",
            params,
            write=True,
        )
        return bool(await self._run(OWNED, params))

    async def delete(self, conversation_id: str, owner: str) -> bool:
        sql = "DELETE FROM chatproxy_conversations WHERE id = ? AND owner = ? RETURNING id"
        return bool(await self._run(sql, (conversation_id, owner), write=True))

    async def set_model(self, conversation_id: str, owner: str, model: str | None) -> bool:
        sql = "UPDATE chatproxy_conversations SET model = ? WHERE id = ? AND owner = ? RETURNING id"
        return bool(await self._run(sql, (model, conversation_id, owner), write=True))
