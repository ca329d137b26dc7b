"""`POST /{provider}/`: the native stateless proxy."""

from __future__ import annotations

import json

from aiohttp import web

from chatproxy.clients.base import CompletionRequest, Delta
from chatproxy.config import PROVIDERS as PROVIDER_NAMES
from chatproxy.errors import ChatProxyError, MethodNotAllowedError, NotFoundError
from chatproxy.handlers.common import json_response, parse_body
from chatproxy.handlers.streaming import StreamResult, error_event_data, relay, sse
from chatproxy.keys import PROVIDERS, SETTINGS
from chatproxy.logs import request_id_var
from chatproxy.prompt import apply_system_prompt
from chatproxy.schemas import ChatRequest, ChatResponse, Message, Usage


class NativeFramer:
    """`event: delta` / `event: done` / `event: error`, as DESIGN.md describes."""

    def __init__(self, model: str, sent: list[Message]) -> None:
        self.model = model
        self.sent = sent

    def delta(self, delta: Delta) -> bytes:
        if not delta.content:
            return b""
        return sse(json.dumps({"content": delta.content}, ensure_ascii=False), "delta")

    def done(self, result: StreamResult) -> bytes:
        reply = Message(role="assistant", content=result.content)
        body = ChatResponse(
            model=self.model,
            messages=[*self.sent, reply],
            usage=result.usage or Usage(),
            finish_reason=result.finish_reason,
        )
        return sse(body.model_dump_json(exclude_none=True), "done")

    def error(self, exc: ChatProxyError) -> bytes:
        return sse(error_event_data(exc), "error")


def stop_list(stop: list[str] | str | None) -> list[str] | None:
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else stop


async def chat(request: web.Request) -> web.StreamResponse:
    """Serves every method on `/{name}` so a stray GET is a 404 or 405 that says which."""
    providers = request.app[PROVIDERS]
    settings = request.app[SETTINGS]
    name = request.match_info["provider"]
    if request.method != "POST":
        if name not in PROVIDER_NAMES:
            raise NotFoundError(f"no route for {request.method} {request.path}")
        raise MethodNotAllowedError(f"{request.method} is not allowed on {request.path}; use POST")
    providers.lookup(name)
    body = await parse_body(request, ChatRequest, max_messages=settings.max_messages)
    client = providers.get(name)
    messages = apply_system_prompt(
        body.messages, settings.system_prompt_for(name), settings.system_prompt_mode
    )
    call = CompletionRequest(
        model=body.model or client.default_model,
        messages=messages,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_tokens,
        stop=stop_list(body.stop),
        request_id=request_id_var.get(),
    )
    with providers.track(name):
        if body.stream:
            return await relay(request, client.stream(call), NativeFramer(call.model, messages))
        completion = await client.complete(call)
    reply = Message(role="assistant", content=completion.content)
    return json_response(
        ChatResponse(
            model=completion.model,
            messages=[*messages, reply],
            usage=completion.usage,
            finish_reason=completion.finish_reason,
        )
    )
