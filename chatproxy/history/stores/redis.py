"""Redis through redis.asyncio: fast, shared by chatproxy copies, optionally expiring.

Guarantees: every write is one Lua script, which Redis runs atomically, so a turn is
appended whole and concurrent writers (any number of clients) never interleave; the owner
check and the write happen in the same script. Durability is the server's: with neither
AOF nor RDB snapshots a restart of Redis loses every conversation, and with `ttl` a
conversation expires `ttl` seconds after its last turn (each append refreshes it).
Keys: `{prefix}conv:{<id>}` (a hash: owner, model, created_at) and `{prefix}turns:{<id>}`
(a list, one JSON turn per element); the braces make both keys one Redis Cluster slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

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
# Any failure of the store is the store's, to the chat request it fails (out of memory, a
# read-only replica, a wrong password), as much as a lost connection.
ERRORS = (OSError, redis.exceptions.RedisError)
# Every script: KEYS = conversation hash, turns list; ARGV[1] = owner.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'created_at', ARGV[2])
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'model', ARGV[4]) end
if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
return 1
"""
APPEND = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'created_at', ARGV[2])
elseif owner ~= ARGV[1] then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[3])
if tonumber(ARGV[4]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
"""
# ARGV[2]: how many turns from the end; -1 for all. A missing conversation gives nil.
TURNS = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
local n = tonumber(ARGV[2])
if n == 0 then return {} end
if n < 0 then return redis.call('LRANGE', KEYS[2], 0, -1) end
return redis.call('LRANGE', KEYS[2], -n, -1)
"""
# The model ('' for none), the first turn when it lies before the last ARGV[2] ('' when
# not), then those turns; a missing conversation gives nil.
RECALL = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
local n = tonumber(ARGV[2])
local out = {redis.call('HGET', KEYS[1], 'model') or ''}
if redis.call('LLEN', KEYS[2]) > n then
  out[2] = redis.call('LINDEX', KEYS[2], 0)
else
  out[2] = ''
end
if n > 0 then
  for _, turn in ipairs(redis.call('LRANGE', KEYS[2], -n, -1)) do out[#out + 1] = turn end
end
return out
"""
# ARGV[2]: 'clear', 'delete', 'model' (ARGV[3]: the model) or 'nomodel'.
CHANGE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local what = ARGV[2]
if what == 'clear' then redis.call('DEL', KEYS[2])
elseif what == 'delete' then redis.call('DEL', KEYS[1], KEYS[2])
elseif what == 'model' then redis.call('HSET', KEYS[1], 'model', ARGV[3])
else redis.call('HDEL', KEYS[1], 'model') end
return 1
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStore(HistoryStore):
    """`client`: a redis.asyncio.Redis (connections are made on first use)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        ttl: float | None = None,
        key_prefix: str = "chatproxy:",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._client = client
        self._ttl_ms = round(ttl * 1000) if ttl else 0
        self._prefix = key_prefix
        self._timeout = timeout
        self._ready = False
        self._closed = False
        self._create = client.register_script(CREATE)
        self._append = client.register_script(APPEND)
        self._turns = client.register_script(TURNS)
        self._recall = client.register_script(RECALL)
        self._change = client.register_script(CHANGE)

    def _keys(self, conversation_id: str) -> list[str]:
        tag = f"{{{conversation_id}}}"
        return [f"{self._prefix}conv:{tag}", f"{self._prefix}turns:{tag}"]

    @asynccontextmanager
    async def _use(self) -> AsyncIterator[aioredis.Redis]:
        async with unavailable_on("Redis", self._timeout, ERRORS):
            if self._closed:
                raise StoreUnavailableError("the Redis store is closed")
            if not self._ready:
                key = f"{self._prefix}schema_version"
                await self._client.set(key, SCHEMA_VERSION, nx=True)
                version = int(await self._client.get(key) or 0)
                if version > SCHEMA_VERSION:
                    raise SchemaVersionError(version, SCHEMA_VERSION)
                self._ready = True
            yield self._client

    async def open(self) -> None:
        async with self._use():
            pass

    async def close(self) -> None:
        self._closed = True
        async with unavailable_on("Redis", self._timeout, ERRORS):
            await self._client.aclose()

    async def ping(self) -> None:
        async with self._use() as client:
            await client.ping()

    async def create(self, conversation_id: str, owner: str, model: str | None = None) -> bool:
        args: list[str | int] = [
            owner,
            utc_now().isoformat(),
            int(model is not None),
            model or "",
            self._ttl_ms,
        ]
        async with self._use():
            return bool(await self._create(keys=self._keys(conversation_id), args=args))

    async def info(self, conversation_id: str, owner: str) -> ConversationInfo | None:
        async with self._use() as client:
            found: list[Any] = await client.hmget(
                self._keys(conversation_id)[0], ["owner", "model", "created_at"]
            )
        stored_owner, model, created_at = found
        if stored_owner is None or _text(stored_owner) != owner:
            return None
        return ConversationInfo(
            conversation_id,
            owner,
            None if model is None else _text(model),
            datetime.fromisoformat(_text(created_at)),
        )

    async def _read(self, conversation_id: str, owner: str, n: int) -> list[Any] | None:
        async with self._use():
            found: list[Any] | None = await self._turns(
                keys=self._keys(conversation_id), args=[owner, n]
            )
            return found

    async def recent_turns(
        self, conversation_id: str, owner: str, limit: int
    ) -> list[list[StoredMessage]] | None:
        check_limit(limit)
        found = await self._read(conversation_id, owner, limit)
        return None if found is None else [decode_turn(turn) for turn in found]

    async def recall(self, conversation_id: str, owner: str, limit: int) -> Recalled | None:
        check_limit(limit)
        async with self._use():
            found: list[Any] | None = await self._recall(
                keys=self._keys(conversation_id), args=[owner, limit]
            )
        if found is None:
            return None
        model, first, *window = found
        return recalled(window, _text(model) or None, first=first or None)

    async def messages(self, conversation_id: str, owner: str) -> list[StoredMessage] | None:
        found = await self._read(conversation_id, owner, -1)
        return None if found is None else [m for turn in found for m in decode_turn(turn)]

    async def append_turn(
        self, conversation_id: str, owner: str, turn: Sequence[StoredMessage]
    ) -> bool:
        args: list[str | int] = [owner, utc_now().isoformat(), encode_turn(turn), self._ttl_ms]
        async with self._use():
            return bool(await self._append(keys=self._keys(conversation_id), args=args))

    async def _apply(self, conversation_id: str, args: list[str]) -> bool:
        async with self._use():
            return bool(await self._change(keys=self._keys(conversation_id), args=args))

    async def clear(self, conversation_id: str, owner: str) -> bool:
        return await self._apply(conversation_id, [owner, "clear"])

    async def delete(self, conversation_id: str, owner: str) -> bool:
        return await self._apply(conversation_id, [owner, "delete"])

    async def set_model(self, conversation_id: str, owner: str, model: str | None) -> bool:
        if model is None:
            return await self._apply(conversation_id, [owner, "nomodel"])
        return await self._apply(conversation_id, [owner, "model", model])
