"""The interface every history store implements, its values and its errors.

A conversation has an owner (an opaque string: a hash of the client's key, or "") and a
list of turns. A turn is what one successful chat request adds, its new messages plus the
reply, and is appended as one unit, so concurrent requests never interleave. Every read
and write by another owner behaves as if the conversation did not exist.
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from chatproxy.schemas import NAME_CHARS, NAME_MAX, Message

DEFAULT_TIMEOUT = 5.0
# What a client-chosen conversation id may hold; the stores accept any string.
CONVERSATION_ID_RE = re.compile(f"[{NAME_CHARS}]{{1,{NAME_MAX}}}")


def valid_conversation_id(conversation_id: str) -> bool:
    """Whether a client-chosen id has an allowed length and only allowed characters."""
    return CONVERSATION_ID_RE.fullmatch(conversation_id) is not None


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    role: str
    content: str
    timestamp: datetime  # aware, UTC
    model: str | None = None  # the provider/model that answered, or that the request named


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    conversation_id: str
    owner: str
    model: str | None  # the conversation's default provider/model
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Recalled:
    """A conversation as a chat request gets it: its last turns' messages and its model."""

    messages: list[Message]
    model: str | None  # the conversation's default provider/model


class StoreUnavailableError(Exception):
    """The store cannot be reached, or did not answer within its timeout."""


class SchemaVersionError(RuntimeError):
    """The store holds a newer schema than this chatproxy knows."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(f"history schema version {found} is newer than this chatproxy's {known}")


@asynccontextmanager
async def unavailable_on(
    store: str, seconds: float, errors: tuple[type[BaseException], ...]
) -> AsyncIterator[None]:
    """Bound the block by `seconds`; a timeout and `errors` become StoreUnavailableError."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise StoreUnavailableError(f"{store} did not answer within {seconds:g} s") from exc
    except errors as exc:
        raise StoreUnavailableError(f"{store} is unavailable: {exc}") from exc


def check_limit(limit: int) -> None:
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}")


class HistoryStore(abc.ABC):
    """Conversations and their turns, kept server-side; every method may raise
    StoreUnavailableError."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create or check the schema (a store that fails here retries on use)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailableError when it does not."""

    @abc.abstractmethod
    async def create(self, conversation_id: str, owner: str, model: str | None = None) -> bool:
        """Create an empty conversation; False if the id exists already, whoever owns it."""

    @abc.abstractmethod
    async def info(self, conversation_id: str, owner: str) -> ConversationInfo | None:
        """The conversation's owner, default model and creation time."""

    @abc.abstractmethod
    async def recent_turns(
        self, conversation_id: str, owner: str, limit: int
    ) -> list[list[StoredMessage]] | None:
        """The last `limit` turns, oldest first; None when there is no such conversation."""

    @abc.abstractmethod
    async def recall(self, conversation_id: str, owner: str, limit: int) -> Recalled | None:
        """What a chat request needs, on its hot path, in one round trip where the store
        allows: the conversation's default model and the messages (role and content) of its
        last `limit` turns, after the first turn's leading system messages when that turn
        is older than those: a conversation's instructions outlive the window."""

    @abc.abstractmethod
    async def messages(self, conversation_id: str, owner: str) -> list[StoredMessage] | None:
        """Every stored message, oldest first; None when there is no such conversation."""

    @abc.abstractmethod
    async def append_turn(
        self, conversation_id: str, owner: str, turn: Sequence[StoredMessage]
    ) -> bool:
        """Append one turn atomically, creating the conversation for `owner` if absent;
        False (nothing written) when another owner has the id."""

    @abc.abstractmethod
    async def clear(self, conversation_id: str, owner: str) -> bool:
        """Drop the turns, keep the conversation and its model."""

    @abc.abstractmethod
    async def delete(self, conversation_id: str, owner: str) -> bool:
        """Drop the conversation and its turns."""

    @abc.abstractmethod
    async def set_model(self, conversation_id: str, owner: str, model: str | None) -> bool:
        """Set (or, with None, unset) the conversation's default provider/model."""

    async def fork(self, source_id: str, target_id: str, owner: str, limit: int) -> bool:
        """Create `target_id` for `owner` holding a copy of the last `limit` turns of
        `source_id` (and its model): a new branch, which later appends to either leave the
        other alone. False, writing nothing, when `source_id` is not `owner`'s or
        `target_id` exists. Built on the other methods; a store may do it in one step."""
        check_limit(limit)
        turns = await self.recent_turns(source_id, owner, limit)
        info = await self.info(source_id, owner)
        if turns is None or info is None:
            return False
        if not await self.create(target_id, owner, info.model):
            return False
        for turn in turns:
            await self.append_turn(target_id, owner, turn)
        return True
