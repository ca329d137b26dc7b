"""A fake OpenAI-compatible upstream: scripted answers, hangs, resets and streams."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


def completion_body(text: str, model: str = "gpt-4o-mini", finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def reply(text: str = "Hello!", model: str = "gpt-4o-mini") -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        return web.json_response(completion_body(text, model))

    return behave


def status(code: int, body: Any = None, headers: dict[str, str] | None = None) -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        payload = body if body is not None else {"error": {"message": f"status {code}"}}
        return web.json_response(payload, status=code, headers=headers)

    return behave


def raw(body: bytes, code: int = 200, content_type: str = "application/json") -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=code, content_type=content_type)

    return behave


def tool_call_reply(name: str, arguments: str) -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        body = completion_body("")
        body["choices"][0]["message"] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc123",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        }
        body["choices"][0]["finish_reason"] = "tool_calls"
        return web.json_response(body)

    return behave


def tool_call_stream(name: str, argument_parts: list[str]) -> Behaviour:
    """OpenAI's streamed tool call: id and name first, then the arguments in pieces."""

    async def behave(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        first = {
            "index": 0,
            "id": "call_abc123",
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        deltas: list[dict[str, Any]] = [
            {"role": "assistant", "content": None, "tool_calls": [first]}
        ]
        deltas += [
            {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}
            for part in argument_parts
        ]
        for delta in deltas:
            event = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        await resp.write(f"data: {chunk(finish='tool_calls')}\n\ndata: [DONE]\n\n".encode())
        return resp

    return behave


def hang(seconds: float = 3600) -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.json_response(completion_body("too late"))

    return behave


def reset() -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError

    return behave


def chunk(
    content: str | None = None, finish: str | None = None, usage: dict[str, int] | None = None
) -> str:
    delta = {} if content is None else {"content": content}
    body: dict[str, Any] = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        body["choices"] = []
        body["usage"] = usage
    return json.dumps(body)


def stream(
    parts: list[str],
    *,
    done: bool = True,
    pause: float = 0.0,
    stall_after: int | None = None,
    usage: bool = True,
    split: bool = False,
) -> Behaviour:
    """An SSE stream of `parts`; `stall_after=N` goes silent after N events, `split` writes
    each event in two pieces to test reassembly."""

    async def behave(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        events = [chunk(p) for p in parts] + [chunk(finish="stop")]
        if usage:
            events.append(
                chunk(
                    usage={
                        "prompt_tokens": 5,
                        "completion_tokens": len(parts),
                        "total_tokens": 5 + len(parts),
                    }
                )
            )
        for number, event in enumerate(events):
            if stall_after is not None and number >= stall_after:
                await asyncio.sleep(3600)
            data = f"data: {event}\n\n".encode()
            if split:
                await resp.write(data[:7])
                await asyncio.sleep(0.001)
                await resp.write(data[7:])
            else:
                await resp.write(data)
            if pause:
                await asyncio.sleep(pause)
        if done:
            await resp.write(b"data: [DONE]\n\n")
        return resp

    return behave


@dataclass
class FakeOpenAI:
    """Answers from `script` in order, then `default`; records what it was sent."""

    script: deque[Behaviour] = field(default_factory=deque)
    default: Behaviour = field(default_factory=reply)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    base_url: str = ""
    models_calls: int = 0
    received: asyncio.Event = field(default_factory=asyncio.Event)
    disconnects: int = 0

    def queue(self, *behaviours: Behaviour) -> None:
        self.script.extend(behaviours)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        self.headers.append(dict(request.headers))
        self.received.set()
        behaviour = self.script.popleft() if self.script else self.default
        try:
            return await behaviour(request)
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects += 1
            raise

    async def models(self, request: web.Request) -> web.Response:
        self.models_calls += 1
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": "gpt-4o", "object": "model", "owned_by": "openai"},
                    {"id": "gpt-4o-mini", "object": "model", "owned_by": "openai"},
                ],
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        return app
