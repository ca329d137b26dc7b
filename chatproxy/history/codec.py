"""A turn as the SQL and Redis stores keep it: one JSON array of message objects."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from itertools import takewhile
from typing import Protocol, TypeVar

from pydantic import TypeAdapter

from chatproxy.history.base import Recalled, StoredMessage
from chatproxy.schemas import Message

# A stored turn read back for a chat request: role and content only, parsed and checked in
# one call of pydantic's Rust core (5x cheaper than json.loads and a dataclass a message).
_MESSAGES = TypeAdapter(list[Message])


class Role(Protocol):
    @property
    def role(self) -> str: ...


M = TypeVar("M", bound=Role)


def utc(timestamp: datetime) -> datetime:
    """The same instant in UTC; a naive timestamp is refused, since its zone is unknown."""
    if timestamp.utcoffset() is None:
        raise ValueError(f"timestamp {timestamp.isoformat()} has no time zone")
    return timestamp.astimezone(UTC)


def check_turn(turn: Sequence[StoredMessage]) -> list[StoredMessage]:
    """The turn with UTC timestamps; an empty turn is refused."""
    if not turn:
        raise ValueError("a turn holds at least one message")
    return [replace(m, timestamp=utc(m.timestamp)) for m in turn]


def encode_turn(turn: Sequence[StoredMessage]) -> str:
    if not turn:
        raise ValueError("a turn holds at least one message")
    items = [
        {
            "role": m.role,
            "content": m.content,
            "timestamp": utc(m.timestamp).isoformat(),
            "model": m.model,
        }
        for m in turn
    ]
    text = json.dumps(items, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (JSON allows "\ud800") cannot be UTF-8: keep it as an escape.
        text = json.dumps(items, separators=(",", ":"))
    return text


def decode_turn(text: str | bytes) -> list[StoredMessage]:
    return [
        StoredMessage(
            role=m["role"],
            content=m["content"],
            timestamp=datetime.fromisoformat(m["timestamp"]),
            model=m["model"],
        )
        for m in json.loads(text)
    ]


def decode_messages(texts: Sequence[str | bytes]) -> list[Message]:
    """Stored turns as the messages a chat request sends upstream: no timestamps or models."""
    return [message for text in texts for message in _MESSAGES.validate_json(text)]


def instructions(messages: Iterable[M]) -> list[M]:
    """A first turn's leading system messages: the conversation's instructions."""
    return list(takewhile(lambda message: message.role == "system", messages))


def recalled(
    window: Sequence[str | bytes], model: str | None, first: str | bytes | None = None
) -> Recalled:
    """A recall from encoded turns: the window's messages, after the instructions of the
    conversation's first turn when that turn (`first`) lies before the window."""
    pinned = instructions(_MESSAGES.validate_json(first)) if first else []
    return Recalled(pinned + decode_messages(window), model)
