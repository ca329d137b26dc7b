"""The interface every provider implements, and the values it speaks in."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from chatproxy.schemas import Message, Usage


@dataclass(slots=True)
class CompletionRequest:
    """A provider-neutral chat request: the system prompt is already in `messages`."""

    model: str
    messages: list[Message]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    # OpenAI fields passed through as they are (presence_penalty, seed, tools, ...), chatgpt only.
    extra: Mapping[str, Any] | None = None
    request_id: str | None = None
    # OpenAI messages as the client sent them (tool calls, tool results, image parts), the
    # system prompt applied; when set, the chatgpt provider sends these instead of `messages`.
    raw_messages: list[dict[str, Any]] | None = None
    # How many messages chatproxy put before the client's own (the operator's prompt, stored
    # history), so that an error about message N names the client's N.
    added_before: int = 0


@dataclass(slots=True)
class Completion:
    content: str
    model: str
    usage: Usage
    finish_reason: str = "stop"
    tool_calls: list[dict[str, Any]] | None = None
    # The provider asks that the conversation so far be forgotten (ERNIE's need_clear_history).
    clear_history: bool = False


@dataclass(slots=True)
class Delta:
    """A piece of a streamed reply; the last one may carry the finish reason and usage."""

    content: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's tool-call fragments, as sent
    clear_history: bool = False


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a client can take, so that nothing outside `clients/` tests a provider's name."""

    # OpenAI's messages as the client sent them: tool calls, tool results, image parts.
    openai_messages: bool = False
    # Tool calling, in OpenAI's terms (a client translates into its own dialect).
    tools: bool = False
    # OpenAI request fields the client receives as they were sent.
    openai_fields: frozenset[str] = frozenset()


class ChatClient(Protocol):
    """What the pipeline needs from a provider."""

    name: str
    default_model: str
    capabilities: Capabilities

    async def complete(self, request: CompletionRequest) -> Completion: ...

    def stream(self, request: CompletionRequest) -> AsyncGenerator[Delta, None]: ...

    async def models(self) -> list[str]: ...

    def not_ready_reason(self) -> str | None:
        """Why the provider cannot serve right now, or None when it can."""
        ...

    def status(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...
