"""PostgreSQL through an asyncpg pool: durable, and shared by any number of chatproxy copies.

Guarantees: a turn is committed (PostgreSQL's own durability: fsync'd WAL) before
append_turn returns. It is one row written by one statement that first updates the
conversation's row (taking its row lock and its next sequence number), so a turn is atomic
and concurrent appends to one conversation, from this pool or from other processes, queue
on that row lock: sequence numbers follow commit order and turns never interleave. Appends
to different conversations do not wait for each other. The schema is created under an
advisory lock, so copies starting together create it once. An operation that outlasts
`timeout` is cancelled on the server (a commit already under way may still land).
`?synchronous_commit=off` on the URL trades the last ~0.6 s of turns on a PostgreSQL
crash (not a chatproxy one) for appends that do not wait for the disk's fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

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
SCHEMA_LOCK = 0x63687078  # pg_advisory_xact_lock key: "chpx"
SCHEMA = """
CREATE TABLE chatproxy_conversations (
    id text COLLATE "C" PRIMARY KEY,
    owner text NOT NULL,
    model text,
    created_at timestamptz NOT NULL,
    last_seq bigint NOT NULL DEFAULT 0
);
CREATE TABLE chatproxy_turns (
    conversation_id text COLLATE "C" NOT NULL
        REFERENCES chatproxy_conversations (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    messages text NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
"""
# Any failure of the store is the store's, to the chat request it fails: a missing database,
# a read-only standby after failover, a rejected password, as much as a lost connection.
ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
CREATE = (
    "INSERT INTO chatproxy_conversations (id, owner, model, created_at)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING RETURNING true"
)
APPEND = """
WITH c AS (
    UPDATE chatproxy_conversations SET last_seq = last_seq + 1
    WHERE id = $1 AND owner = $2 RETURNING id, last_seq
)
INSERT INTO chatproxy_turns (conversation_id, seq, messages)
SELECT id, last_seq, $3 FROM c RETURNING true
"""
# One row per turn, or one row with NULLs for a conversation without turns, or none.
TURNS = """
SELECT t.messages, c.model FROM chatproxy_conversations c
LEFT JOIN LATERAL (
    SELECT seq, messages FROM chatproxy_turns
    WHERE conversation_id = c.id ORDER BY seq DESC LIMIT $3
) t ON true
WHERE c.id = $1 AND c.owner = $2 ORDER BY t.seq
"""
# The last $3 turns and the first one (its instructions outlive the window), the model.
RECALL = """
SELECT t.seq, t.messages, c.model FROM chatproxy_conversations c
LEFT JOIN LATERAL (
    (SELECT seq, messages FROM chatproxy_turns
     WHERE conversation_id = c.id ORDER BY seq DESC LIMIT $3)
    UNION
    (SELECT seq, messages FROM chatproxy_turns
     WHERE conversation_id = c.id ORDER BY seq LIMIT 1)
) t ON true
WHERE c.id = $1 AND c.owner = $2 ORDER BY t.seq
"""
CLEAR = """
WITH c AS (
    SELECT id FROM chatproxy_conversations WHERE id = $1 AND owner = $2 FOR UPDATE
), d AS (
    DELETE FROM chatproxy_turns t USING c WHERE t.conversation_id = c.id
)
SELECT true FROM c
"""


def _texts(rows: list[Any]) -> list[str] | None:
    """The encoded turns; None when not even the conversation's row came back."""
    if not rows:
        return None
    return [row[0] for row in rows if row[0] is not None]


def _turns(rows: list[Any]) -> list[list[StoredMessage]] | None:
    texts = _texts(rows)
    return None if texts is None else [decode_turn(text) for text in texts]


class PostgresStore(HistoryStore):
    """`pool`: asyncpg.create_pool(dsn, ...), awaited or not; open() initializes it."""

    def __init__(self, pool: asyncpg.Pool, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._pool = pool
        self._timeout = timeout
        self._ready = False
        self._closed = False
        self._setup_lock = asyncio.Lock()

    async def _setup(self) -> None:
        await self._pool
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS chatproxy_schema_version (version integer NOT NULL)"
            )
            version = await conn.fetchval("SELECT max(version) FROM chatproxy_schema_version")
            if version is None:
                await conn.execute(SCHEMA)
                await conn.execute(
                    "INSERT INTO chatproxy_schema_version VALUES ($1)", SCHEMA_VERSION
                )
            elif version > SCHEMA_VERSION:
                raise SchemaVersionError(version, SCHEMA_VERSION)
        self._ready = True

    @asynccontextmanager
    async def _use(self) -> AsyncIterator[asyncpg.Pool]:
        async with unavailable_on("PostgreSQL", self._timeout, ERRORS):
            if self._closed:
                raise StoreUnavailableError("the PostgreSQL store is closed")
            if not self._ready:
                async with self._setup_lock:
                    if not self._ready:
                        await self._setup()
            yield self._pool

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._use() as pool:
            rows: list[Any] = await pool.fetch(sql, *args)
            return rows

    async def open(self) -> None:
        async with self._use():
            pass

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            async with unavailable_on("PostgreSQL", self._timeout, ERRORS):
                await self._pool
                await self._pool.close()
        except BaseException:
            with contextlib.suppress(asyncpg.InterfaceError):  # never initialized
                self._pool.terminate()
            raise

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    async def create(self, conversation_id: str, owner: str, model: str | None = None) -> bool:
        return bool(await self._fetch(CREATE, conversation_id, owner, model, utc_now()))

    async def info(self, conversation_id: str, owner: str) -> ConversationInfo | None:
        rows = await self._fetch(
            "SELECT model, created_at FROM chatproxy_conversations WHERE id = $1 AND owner = $2",
            conversation_id,
            owner,
        )
        if not rows:
            return None
        return ConversationInfo(conversation_id, owner, rows[0][0], rows[0][1])

    async def recent_turns(
        self, conversation_id: str, owner: str, limit: int
    ) -> list[list[StoredMessage]] | None:
        check_limit(limit)
        return _turns(await self._fetch(TURNS, conversation_id, owner, limit))

    async def recall(self, conversation_id: str, owner: str, limit: int) -> Recalled | None:
        check_limit(limit)
        rows = await self._fetch(RECALL, conversation_id, owner, limit)
        if not rows:
            return None
        model = rows[0][2]
        texts = [row[1] for row in rows if row[1] is not None]
        if len(texts) > limit:  # the first turn lies before the window
            return recalled(texts[1:], model, first=texts[0])
        return recalled(texts, model)

    async def messages(self, conversation_id: str, owner: str) -> list[StoredMessage] | None:
        turns = _turns(await self._fetch(TURNS, conversation_id, owner, None))
        return None if turns is None else [message for turn in turns for message in turn]

    async def append_turn(
        self, conversation_id: str, owner: str, turn: Sequence[StoredMessage]
    ) -> bool:
        messages = encode_turn(turn)
        if await self._fetch(APPEND, conversation_id, owner, messages):
            return True
        # The first turn: create the conversation (a concurrent first turn may win), retry.
        await self._fetch(CREATE, conversation_id, owner, None, utc_now())
        return bool(await self._fetch(APPEND, conversation_id, owner, messages))

    async def clear(self, conversation_id: str, owner: str) -> bool:
        return bool(await self._fetch(CLEAR, conversation_id, owner))

    async def delete(self, conversation_id: str, owner: str) -> bool:
        sql = "DELETE FROM chatproxy_conversations WHERE id = $1 AND owner = $2 RETURNING true"
        return bool(await self._fetch(sql, conversation_id, owner))

    async def set_model(self, conversation_id: str, owner: str, model: str | None) -> bool:
        sql = (
            "UPDATE chatproxy_conversations SET model = $3"
            " WHERE id = $1 AND owner = $2 RETURNING true"
        )
        return bool(await self._fetch(sql, conversation_id, owner, model))
