"""OpenAI's chat completion format, spoken by OpenAI, GigaChat and every compatible server."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp

from chatproxy.clients.base import Completion, CompletionRequest, Delta
from chatproxy.clients.http import Timeouts, upstream_message
from chatproxy.clients.sse import iter_events
from chatproxy.errors import UpstreamError, UpstreamResponseError
from chatproxy.schemas import Usage

ChunkAdapter = Callable[[dict[str, Any]], dict[str, Any]]


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


def parse_usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    prompt = int(data.get("prompt_tokens") or 0)
    completion = int(data.get("completion_tokens") or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(data.get("total_tokens") or prompt + completion),
    )


def parse_completion(data: Any, *, provider: str, model: str) -> Completion:
    """A `chat.completion` object as a `Completion`; anything else is a 502."""
    try:
        choice = data["choices"][0]
        content = choice["message"].get("content") or ""
        tool_calls = choice["message"].get("tool_calls") or None
        if not isinstance(content, str) or not isinstance(tool_calls, list | None):
            raise TypeError("content is not a string")
        return Completion(
            content=content,
            model=str(data.get("model") or model),
            usage=parse_usage(data.get("usage")) or Usage(),
            finish_reason=str(choice.get("finish_reason") or "stop"),
            tool_calls=tool_calls,
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise UpstreamResponseError(
            f"{provider} answered 200 with a body that is not a chat completion"
        ) from None


def parse_chunk(data: str, provider: str, adapt: ChunkAdapter | None = None) -> Delta | None:
    """One `chat.completion.chunk`; None for chunks that carry nothing (role-only, empty).

    `adapt` rewrites a provider's dialect into OpenAI's first (GigaChat's function calls).
    """
    try:
        chunk = json.loads(data)
    except ValueError:
        raise UpstreamResponseError(f"{provider} sent a stream event that is not JSON") from None
    if not isinstance(chunk, dict):
        raise UpstreamResponseError(f"{provider} sent a stream event that is not an object")
    if "error" in chunk:
        raise UpstreamError(f"{provider} failed mid-stream: {upstream_message(data.encode())}")
    if adapt is not None:
        chunk = adapt(chunk)
    usage = parse_usage(chunk.get("usage"))
    choices = chunk.get("choices") or []
    content, finish, tool_calls = "", None, None
    if choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta") or {}
        if isinstance(delta, dict):
            content = delta.get("content") or ""
            tool_calls = delta.get("tool_calls") or None
        finish = choices[0].get("finish_reason")
    if not content and finish is None and usage is None and tool_calls is None:
        return None
    return Delta(
        content=str(content),
        finish_reason=finish,
        usage=usage,
        tool_calls=tool_calls if isinstance(tool_calls, list) else None,
    )


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
