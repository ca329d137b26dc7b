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
    StoredMessage,
    StoreUnavailableError,
    utc_now,
)
from chatproxy.schemas import Message

log = logging.getLogger(__name__)
T = TypeVar("T")
# /ready must answer quickly even when the store hangs.
READY_TIMEOUT = 1.0


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
        store, cid, owner = self.layer.store, self.conversation_id, self.owner
        if clear:
            await self.layer.run(lambda: store.clear(cid, owner))
            log.info("conversation %s cleared at the provider's request", cid)
            return
        named = f"{self.provider}/{model}"
        turn = [StoredMessage(m.role, m.content, self.received, named) for m in self.new]
        turn.append(StoredMessage("assistant", content, utc_now(), named))
        if not await self.layer.run(lambda: store.append_turn(cid, owner, turn)):
            raise not_found(cid)


class HistoryLayer:
    """A store opened on first use (it may be down when chatproxy starts), and the turns
    that go upstream: the last `max_turns`."""

    def __init__(self, store: HistoryStore, *, max_turns: int, description: str) -> None:
        self.store = store
        self.max_turns = max_turns
        self.description = description  # for /status: the kind and where, no password
        self._opened = False
        self._opening = asyncio.Lock()

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """One store operation, with the store opened first and its failure a 503."""
        try:
            if not self._opened:
                await self._open()
            return await operation()
        except StoreUnavailableError as exc:
            raise unavailable(exc) from None

    async def _open(self) -> None:
        async with self._opening:
            if not self._opened:
                await self.store.open()
                self._opened = True

    async def open(self) -> None:
        """At start-up: open now if the store answers, else on first use."""
        try:
            await self.run(self._open)
        except ServiceUnavailableError as exc:
            log.warning("%s; will try again when a request needs it", exc.message)

    async def recall(self, conversation_id: str, owner: str) -> Recalled:
        """The conversation's last turns and model (a new id becomes the caller's
        conversation; an id that is someone else's is a 404, never their messages)."""
        store, limit = self.store, self.max_turns
        recalled = await self.run(lambda: store.recall(conversation_id, owner, limit))
        if recalled is not None:
            return recalled
        if await self.run(lambda: store.create(conversation_id, owner)):
            return Recalled([], None)
        # Taken meanwhile: by a concurrent first request of this owner, or by another.
        recalled = await self.run(lambda: store.recall(conversation_id, owner, limit))
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
            if await self.run(partial(self.store.create, conversation_id, owner, model)):
                return conversation_id

    async def show(self, conversation_id: str, owner: str) -> dict[str, Any]:
        """`GET /history/{id}`: every stored message, with its time and model."""
        store = self.store
        messages = await self.run(lambda: store.messages(conversation_id, owner))
        if messages is None:
            raise not_found(conversation_id)
        info = await self.run(lambda: store.info(conversation_id, owner))
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
        if not await self.run(lambda: self.store.delete(conversation_id, owner)):
            raise not_found(conversation_id)

    async def model(self, conversation_id: str, owner: str) -> str | None:
        info = await self.run(lambda: self.store.info(conversation_id, owner))
        if info is None:
            raise not_found(conversation_id)
        return info.model

    async def set_model(self, conversation_id: str, owner: str, model: str | None) -> None:
        if not await self.run(lambda: self.store.set_model(conversation_id, owner, model)):
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
