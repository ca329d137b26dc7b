"""The history layer around the chat pipeline: recall a conversation, record a turn.

It speaks chatproxy's errors (404 for a conversation that is not the caller's, 503 for a
store that cannot be reached) over a `HistoryStore`, which speaks only its own.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from chatproxy.errors import NotFoundError, ServiceUnavailableError
from chatproxy.history.base import (
    HistoryStore,
    Recalled,
    SchemaVersionError,
    StoredMessage,
    StoreUnavailableError,
    utc_now,
)
from chatproxy.schemas import Message

log = logging.getLogger(__name__)
T = TypeVar("T")
# /ready must answer quickly even when the store hangs.
READY_TIMEOUT = 1.0


def scoped(conversation_id: str, owner: str) -> str:
    """The id a conversation is stored under: each key's ids are its own, so no key can take
    an id another will use, nor learn that another key has it."""
    return f"{owner}:{conversation_id}" if owner else conversation_id


def not_found(conversation_id: str) -> NotFoundError:
    return NotFoundError(f"no conversation '{conversation_id}'", param="conversation_id")


def unavailable(exc: StoreUnavailableError) -> ServiceUnavailableError:
    return ServiceUnavailableError(f"the history store cannot be reached: {exc}", retry_after=1)


class Recorder:
    """Records one turn once its reply is known; made when the request is, so the new
    messages carry the time they arrived."""

    __slots__ = ("conversation_id", "layer", "new", "owner", "provider", "received")

    def __init__(
        self,
        layer: HistoryLayer,
        conversation_id: str,
        owner: str,
        new: list[Message],
        provider: str,
    ) -> None:
        self.layer = layer
        self.conversation_id = conversation_id
        self.owner = owner
        self.new = new
        self.provider = provider
        self.received = utc_now()

    async def reply(self, content: str, model: str, *, clear: bool = False) -> None:
        """Append the request's messages and the reply as one turn; or, when the provider
        asks for it (ERNIE's need_clear_history), forget the conversation instead."""
        store, owner = self.layer.store, self.owner
        cid = scoped(self.conversation_id, owner)
        if clear:
            await self.layer.run(lambda: store.clear(cid, owner))
            log.info("conversation %s cleared at the provider's request", self.conversation_id)
            return
        named = f"{self.provider}/{model}"
        # Text only: a reply that is a tool call has none, and a request of tool results
        # brings none (history keeps the conversation, not one exchange's tool traffic).
        turn = [StoredMessage(m.role, m.content, self.received, named) for m in self.new]
        turn.append(StoredMessage("assistant", content, utc_now(), named))
        turn = [m for m in turn if m.content]
        if not turn:
            return
        if not await self.layer.run(lambda: store.append_turn(cid, owner, turn)):
            raise not_found(self.conversation_id)


class HistoryLayer:
    """A store opened on first use (it may be down when chatproxy starts), and the turns
    that go upstream: the last `max_turns`."""

    def __init__(self, store: HistoryStore, *, max_turns: int, description: str) -> None:
        self.store = store
        self.max_turns = max_turns
        self.description = description  # for /status: the kind and where, no password

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """One store operation (the store opens itself on first use, within its timeout),
        its failure a 503."""
        try:
            return await operation()
        except StoreUnavailableError as exc:
            raise unavailable(exc) from None

    async def open(self) -> None:
        """At start-up: open now if the store answers, else on first use. A store that holds
        a newer schema than this chatproxy knows stops it starting."""
        try:
            await self.store.open()
        except StoreUnavailableError as exc:
            log.warning("%s; will try again when a request needs it", exc)
        except SchemaVersionError as exc:
            raise SystemExit(f"chatproxy: HISTORY_STORE: {exc}") from None

    async def recall(self, conversation_id: str, owner: str) -> Recalled:
        """The conversation's last turns and model (a new id becomes the caller's
        conversation; an id that is someone else's is a 404, never their messages)."""
        store, limit, key = self.store, self.max_turns, scoped(conversation_id, owner)
        recalled = await self.run(lambda: store.recall(key, owner, limit))
        if recalled is not None:
            return recalled
        if await self.run(lambda: store.create(key, owner)):
            return Recalled([], None)
        # Taken meanwhile, by a concurrent first request on it.
        recalled = await self.run(lambda: store.recall(key, owner, limit))
        if recalled is None:
            raise not_found(conversation_id)
        return recalled

    def recorder(
        self, conversation_id: str, owner: str, new: list[Message], provider: str
    ) -> Recorder:
        return Recorder(self, conversation_id, owner, new, provider)

    async def create(self, owner: str, model: str | None) -> str:
        """A new conversation under a fresh id."""
        while True:
            conversation_id = uuid.uuid4().hex
            key = scoped(conversation_id, owner)
            if await self.run(partial(self.store.create, key, owner, model)):
                return conversation_id

    async def show(self, conversation_id: str, owner: str) -> dict[str, Any]:
        """`GET /history/{id}`: every stored message, with its time and model."""
        store, key = self.store, scoped(conversation_id, owner)
        messages = await self.run(lambda: store.messages(key, owner))
        if messages is None:
            raise not_found(conversation_id)
        info = await self.run(lambda: store.info(key, owner))
        model = info.model if info is not None else None
        if model is None and messages:
            model = messages[-1].model
        return {
            "conversation_id": conversation_id,
            "model": model,
            "messages": [
                {
                    "role": m.role,
                    "content": m.content,
                    "timestamp": m.timestamp.isoformat(),
                    "model": m.model,
                }
                for m in messages
            ],
        }

    async def delete(self, conversation_id: str, owner: str) -> None:
        key = scoped(conversation_id, owner)
        if not await self.run(lambda: self.store.delete(key, owner)):
            raise not_found(conversation_id)

    async def model(self, conversation_id: str, owner: str) -> str | None:
        key = scoped(conversation_id, owner)
        info = await self.run(lambda: self.store.info(key, owner))
        if info is None:
            raise not_found(conversation_id)
        return info.model

    async def set_model(self, conversation_id: str, owner: str, model: str | None) -> None:
        key = scoped(conversation_id, owner)
        if not await self.run(lambda: self.store.set_model(key, owner, model)):
            raise not_found(conversation_id)

    async def not_ready_reason(self) -> str | None:
        """For /ready: None when the store answers within a second."""
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self.run(self.store.ping)
        except ServiceUnavailableError as exc:
            return exc.message
        except TimeoutError:
            return f"the history store did not answer within {READY_TIMEOUT:g}s"
        return None

    async def close(self) -> None:
        await self.store.close()
