"""`POST /{provider}/`: the native route, parsing a request and framing its answer."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic_core
from aiohttp import web

from chatproxy.access import client_owner
from chatproxy.clients.base import Completion, Delta
from chatproxy.errors import ChatProxyError, MethodNotAllowedError, NotFoundError
from chatproxy.handlers.common import check_message_count, conversation_id_of, parse_body
from chatproxy.handlers.streaming import StreamResult, error_event_data, relay, sse
from chatproxy.keys import SETTINGS
from chatproxy.logs import request_id_var
from chatproxy.pipeline import ChatCall, open_turn
from chatproxy.providers import unknown_provider_error
from chatproxy.schemas import ChatRequest, Message, Usage

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NativeFramer:
    """`event: delta` / `event: done` / `event: error`, as DESIGN.md describes."""

    def __init__(self, model: str, sent: list[Message], conversation_id: str | None) -> None:
        self.model = model
        self.sent = sent
        self.conversation_id = conversation_id

    def delta(self, delta: Delta) -> bytes:
        if not delta.content:
            return b""
        return sse(json.dumps({"content": delta.content}, ensure_ascii=False), "delta")

    def done(self, result: StreamResult) -> bytes:
        body = answer_json(
            self.model,
            self.sent,
            result.content,
            result.usage or Usage(),
            result.finish_reason,
            self.conversation_id,
        )
        return sse(body.decode(), "done")

    def error(self, exc: ChatProxyError) -> bytes:
        return sse(error_event_data(exc), "error")


def stop_list(stop: list[str] | str | None) -> list[str] | None:
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else stop


def _known_path(request: web.Request) -> bool:
    """Whether another route owns this path (`/health`, `/status`), for another method."""
    path = request.path
    for resource in request.app.router.resources():
        info = resource.get_info()
        if info.get("path") == path:
            return True
    return False


async def unknown_provider(request: web.Request) -> web.StreamResponse:
    """`/{name}/` for a name that is not a provider: a chat request learns the known ones,
    and a wrong method on a fixed route (POST /health) is a 405, not an unknown provider."""
    if _known_path(request):
        raise MethodNotAllowedError(f"{request.method} is not allowed on {request.path}")
    if request.method != "POST":
        raise NotFoundError(f"no route for {request.method} {request.path}")
    raise unknown_provider_error(request.match_info["provider"])


def chat_handler(name: str) -> Handler:
    """The handler of `/{name}/`: one per provider, so routing is a dict lookup, not a regex.

    It serves every method so that a stray GET is a 405 that says which method to use.
    """

    async def chat(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            raise MethodNotAllowedError(
                f"{request.method} is not allowed on {request.path}; use POST"
            )
        settings = request.app[SETTINGS]
        body = await parse_body(request, ChatRequest, settings.max_body_bytes)
        check_message_count(body.messages, settings.max_messages)
        conversation_id = conversation_id_of(request, body.conversation_id)
        call = ChatCall(
            provider=name,
            messages=body.messages,
            model=body.model,
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_tokens,
            stop=stop_list(body.stop),
            conversation_id=conversation_id,
            owner=client_owner(request) if conversation_id else "",
            request_id=request_id_var.get(),
        )
        turn = await open_turn(request.app, call)
        sent = turn.request.messages
        if body.stream:
            framer = NativeFramer(turn.request.model, sent, conversation_id)
            return await relay(request, turn.stream(), framer)
        completion = await turn.complete()
        return chat_response(completion, sent, conversation_id)

    return chat


def answer_json(
    model: str,
    sent: list[Message],
    content: str,
    usage: Usage,
    finish_reason: str,
    conversation_id: str | None = None,
) -> bytes:
    """`ChatResponse`'s JSON, built from a dict: a quarter of the cost of the model's dump.
    The plain answer and a stream's `done` event are this same object."""
    answer: dict[str, Any] = {
        "model": model,
        "messages": [*sent, {"role": "assistant", "content": content}],
        "usage": usage.as_dict(),
        "finish_reason": finish_reason,
    }
    if conversation_id is not None:
        answer["conversation_id"] = conversation_id
    return pydantic_core.to_json(answer)


def chat_response(
    completion: Completion, sent: list[Message], conversation_id: str | None
) -> web.Response:
    body = answer_json(
        completion.model,
        sent,
        completion.content,
        completion.usage,
        completion.finish_reason,
        conversation_id,
    )
    return web.Response(body=body, content_type="application/json")
