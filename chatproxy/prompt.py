"""The operator's system prompt rule, applied before any provider adaptation."""

from __future__ import annotations

from typing import Literal

from chatproxy.schemas import Message


def apply_system_prompt(
    messages: list[Message], prompt: str, mode: Literal["prepend", "always", "off"]
) -> list[Message]:
    """Prepend the operator's prompt unless the conversation already carries it.

    `prepend`: a conversation that starts with a system message keeps it as it is, so a
    client that sends back the array it received never gains a second prompt.
    `always`: the operator's prompt comes first and any client system text follows it.
    `off`: the conversation goes out as the client sent it.
    """
    if not prompt or mode == "off":
        return list(messages)
    first = messages[0] if messages else None
    keep = (
        first is not None
        and first.role == "system"
        and (mode == "prepend" or first.content == prompt)
    )
    if keep:
        return list(messages)
    return [Message(role="system", content=prompt), *messages]
