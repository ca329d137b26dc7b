"""A store in this process's memory, for tests and demos.

Guarantees: nothing survives the process, and copies of chatproxy do not share it. Every
method runs without awaiting, so on one event loop each call is atomic: concurrent turns
never interleave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from chatproxy.history.base import (
    ConversationInfo,
    HistoryStore,
    Recalled,
    StoredMessage,
    StoreUnavailableError,
    check_limit,
    utc_now,
)
from chatproxy.history.codec import check_turn, instructions
from chatproxy.schemas import Message


@dataclass(slots=True)
class _Conversation:
    info: ConversationInfo
    turns: list[list[StoredMessage]] = field(default_factory=list)


class MemoryStore(HistoryStore):
    def __init__(self) -> None:
        self._data: dict[str, _Conversation] | None = {}

    def _live(self) -> dict[str, _Conversation]:
        if self._data is None:
            raise StoreUnavailableError("the memory store is closed")
        return self._data

    async def open(self) -> None:
        self._live()

    async def close(self) -> None:
        self._data = None

    async def ping(self) -> None:
        self._live()

    def _get(self, conversation_id: str, owner: str) -> _Conversation | None:
        conversation = self._live().get(conversation_id)
        if conversation is None or conversation.info.owner != owner:
            return None
        return conversation

    def _create(self, conversation_id: str, owner: str, model: str | None) -> None:
        info = ConversationInfo(conversation_id, owner, model, utc_now())
        self._live()[conversation_id] = _Conversation(info)

    async def create(self, conversation_id: str, owner: str, model: str | None = None) -> bool:
        if conversation_id in self._live():
            return False
        self._create(conversation_id, owner, model)
        return True

    async def info(self, conversation_id: str, owner: str) -> ConversationInfo | None:
        conversation = self._get(conversation_id, owner)
        return None if conversation is None else conversation.info

    async def recent_turns(
        self, conversation_id: str, owner: str, limit: int
    ) -> list[list[StoredMessage]] | None:
        check_limit(limit)
        conversation = self._get(conversation_id, owner)
        if conversation is None:
            return None
        turns = conversation.turns[-limit:] if limit else []
        return [list(turn) for turn in turns]

    async def recall(self, conversation_id: str, owner: str, limit: int) -> Recalled | None:
        check_limit(limit)
        conversation = self._get(conversation_id, owner)
        if conversation is None:
            return None
        turns = conversation.turns
        window = turns[-limit:] if limit else []
        pinned = instructions(turns[0]) if len(turns) > limit else []
        messages = [*pinned, *(m for turn in window for m in turn)]
        return Recalled(
            [Message(role=m.role, content=m.content) for m in messages], conversation.info.model
        )

    async def messages(self, conversation_id: str, owner: str) -> list[StoredMessage] | None:
        conversation = self._get(conversation_id, owner)
        if conversation is None:
            return None
        return [message for turn in conversation.turns for message in turn]

    async def append_turn(
        self, conversation_id: str, owner: str, turn: Sequence[StoredMessage]
    ) -> bool:
        checked = check_turn(turn)
        if conversation_id not in self._live():
            self._create(conversation_id, owner, None)
        conversation = self._get(conversation_id, owner)
        if conversation is None:
            return False
        conversation.turns.append(checked)
        return True

    async def clear(self, conversation_id: str, owner: str) -> bool:
        conversation = self._get(conversation_id, owner)
        if conversation is None:
            return False
        conversation.turns = []
        return True

    async def delete(self, conversation_id: str, owner: str) -> bool:
        if self._get(conversation_id, owner) is None:
            return False
        del self._live()[conversation_id]
        return True

    async def set_model(self, conversation_id: str, owner: str, model: str | None) -> bool:
        conversation = self._get(conversation_id, owner)
        if conversation is None:
            return False
        conversation.info = ConversationInfo(
            conversation_id, owner, model, conversation.info.created_at
        )
        return True
