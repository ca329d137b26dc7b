"""OpenAI's chat completion format, spoken by OpenAI, GigaChat and every compatible server."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp
import pydantic_core

from chatproxy.clients.base import Completion, CompletionRequest, Delta
from chatproxy.clients.http import Timeouts, error_text
from chatproxy.clients.sse import iter_events
from chatproxy.errors import UpstreamError, UpstreamResponseError
from chatproxy.schemas import Usage

ChunkAdapter = Callable[[dict[str, Any]], dict[str, Any]]
# OpenAI's tool fields: what a tool-calling client that is not OpenAI itself translates.
OPENAI_TOOL_FIELDS = frozenset({"tools", "tool_choice", "functions", "function_call"})
# Every OpenAI field an OpenAI-compatible server receives as it was sent.
OPENAI_PASSTHROUGH = OPENAI_TOOL_FIELDS | {
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "logit_bias",
    "user",
    "response_format",
    "parallel_tool_calls",
}


def chat_payload(request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": request.model,
        "messages": request.raw_messages
        if request.raw_messages is not None
        else [{"role": m.role, "content": m.content} for m in request.messages],
    }
    if request.extra:
        payload.update(request.extra)
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    if request.max_tokens is not None:
        payload["max_tokens"] = request.max_tokens
    if request.stop is not None:
        payload["stop"] = request.stop
    if stream:
        payload["stream"] = True
    return payload


def malformed(provider: str, what: str, exc: UpstreamResponseError) -> UpstreamResponseError:
    """`exc` (which says what was wrong) told as who sent it."""
    return UpstreamResponseError(f"{provider} sent a malformed {what}: {exc.message}")


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise UpstreamResponseError(f"usage.{key} is not a token count")


def parse_usage(data: Any) -> Usage | None:
    """Token counts; absent is None, malformed is a 502 (never a TypeError in a handler)."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise UpstreamResponseError("usage is not an object")
    prompt = _count(data, "prompt_tokens")
    completion = _count(data, "completion_tokens")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_count(data, "total_tokens") or prompt + completion,
    )


def _tool_calls(value: Any) -> list[dict[str, Any]] | None:
    if not value:
        return None
    if not isinstance(value, list) or not all(isinstance(call, dict) for call in value):
        raise UpstreamResponseError("tool_calls is not a list of objects")
    return value


def _optional_text(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise UpstreamResponseError(f"{what} is not text")


def parse_completion(data: Any, *, provider: str, model: str) -> Completion:
    """A `chat.completion` object as a `Completion`; anything else is a 502."""
    if isinstance(data, dict) and "error" in data and "choices" not in data:
        # An error report sent with HTTP 200: its message is the only explanation there is.
        raise UpstreamError(
            f"{provider} answered with an error: {error_text(data) or 'no message'}"
        )
    choices = data.get("choices") if isinstance(data, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict) or not isinstance(choice, dict):
        raise UpstreamResponseError(
            f"{provider} answered 200 with a body that is not a chat completion"
        )
    assert isinstance(data, dict)  # a choice was found in it
    try:
        return Completion(
            content=_optional_text(message.get("content"), "message content") or "",
            model=_optional_text(data.get("model"), "model name") or model,
            usage=parse_usage(data.get("usage")) or Usage(),
            finish_reason=_optional_text(choice.get("finish_reason"), "finish reason") or "stop",
            tool_calls=_tool_calls(message.get("tool_calls")),
        )
    except UpstreamResponseError as exc:
        raise malformed(provider, "completion", exc) from None


def parse_chunk(data: str, provider: str, adapt: ChunkAdapter | None = None) -> Delta | None:
    """One `chat.completion.chunk`; None for chunks that carry nothing (role-only, empty).

    `adapt` rewrites a provider's dialect into OpenAI's first (GigaChat's function calls).
    """
    try:
        chunk = pydantic_core.from_json(data)
    except ValueError:
        raise UpstreamResponseError(f"{provider} sent a stream event that is not JSON") from None
    if not isinstance(chunk, dict):
        raise UpstreamResponseError(f"{provider} sent a stream event that is not an object")
    if "error" in chunk:
        raise UpstreamError(f"{provider} failed mid-stream: {error_text(chunk) or 'no message'}")
    if adapt is not None:
        chunk = adapt(chunk)
    try:
        return _chunk_delta(chunk)
    except UpstreamResponseError as exc:
        raise malformed(provider, "stream chunk", exc) from None


def _chunk_delta(chunk: dict[str, Any]) -> Delta | None:
    usage = parse_usage(chunk.get("usage"))
    choices = chunk.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise UpstreamResponseError("choices is not a list")
    content: str | None = None
    finish: str | None = None
    tool_calls = None
    if choices:
        choice = choices[0]
        if not isinstance(choice, dict):
            raise UpstreamResponseError("choices.0 is not an object")
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = _optional_text(delta.get("content"), "content delta")
            tool_calls = _tool_calls(delta.get("tool_calls"))
        elif delta is not None:
            raise UpstreamResponseError("choices.0.delta is not an object")
        finish = _optional_text(choice.get("finish_reason"), "finish reason")
    if not content and finish is None and usage is None and tool_calls is None:
        return None
    return Delta(content=content or "", finish_reason=finish, usage=usage, tool_calls=tool_calls)


async def stream_deltas(
    resp: aiohttp.ClientResponse,
    *,
    provider: str,
    timeouts: Timeouts,
    adapt: ChunkAdapter | None = None,
) -> AsyncGenerator[Delta, None]:
    """Deltas of an OpenAI-style SSE stream; one that ends without `[DONE]` is an error."""
    finished = False
    try:
        async for event in iter_events(resp, provider=provider, timeouts=timeouts):
            if event.data.strip() == "[DONE]":
                finished = True
                break
            delta = parse_chunk(event.data, provider, adapt)
            if delta is not None:
                yield delta
        if not finished:
            raise UpstreamError(f"{provider} ended the stream without [DONE]")
    finally:
        # A finished stream hands its connection back; an abandoned one must drop it so the
        # upstream stops generating for nobody.
        if finished:
            resp.release()
        else:
            resp.close()
