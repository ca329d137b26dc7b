"""The operator's system prompt rule, applied before any provider adaptation."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Literal, Protocol, TypeVar

from chatproxy.schemas import Message

# OpenAI's newer name for a system message counts as one.
SYSTEM_ROLES = ("system", "developer")


class Turn(Protocol):
    """Anything with a role and content: our Message, or an OpenAI message as sent."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> object: ...


T = TypeVar("T", bound=Turn)


@lru_cache(maxsize=16)
def system_message(prompt: str) -> Message:
    """The operator's prompt as a message; frozen, so one instance serves every request."""
    return Message(role="system", content=prompt)


def apply_system_prompt(
    messages: Sequence[T], prompt: str, mode: Literal["prepend", "always", "off"]
) -> list[T | Message]:
    """Prepend the operator's prompt unless the conversation already carries it.

    `prepend`: a conversation that starts with a system message keeps it as it is, so a
    client that sends back the array it received never gains a second prompt.
    `always`: the operator's prompt comes first and any client system text follows it.
    `off`: the conversation goes out as the client sent it.
    """
    kept: list[T | Message] = list(messages)
    if not prompt or mode == "off":
        return kept
    first = messages[0] if messages else None
    keep = (
        first is not None
        and first.role in SYSTEM_ROLES
        and (mode == "prepend" or first.content == prompt)
    )
    if keep:
        return kept
    return [system_message(prompt), *kept]
