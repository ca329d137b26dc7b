"""`POST /v1/chat/completions`, `GET /v1/models` and `GET /v1/models/{id}`, in OpenAI's
own formats."""

from __future__ import annotations

import contextlib
import json
import time
from random import getrandbits
from typing import Any

import pydantic_core
from aiohttp import web

from chatproxy.access import client_owner
from chatproxy.clients.base import Completion, Delta
from chatproxy.config import PROVIDER_NAMES
from chatproxy.errors import ChatProxyError, InvalidRequestError, NotFoundError
from chatproxy.handlers.chat import stop_list
from chatproxy.handlers.common import (
    check_message_count,
    conversation_id_of,
    json_response,
    parse_body,
)
from chatproxy.handlers.meta import model_cards
from chatproxy.handlers.streaming import StreamResult, relay, sse
from chatproxy.keys import HISTORY, PROVIDERS, SETTINGS
from chatproxy.logs import request_id_var
from chatproxy.openai_schemas import OpenAIChatRequest, OpenAIMessage
from chatproxy.pipeline import ChatCall, open_turn
from chatproxy.routing import (
    ALIASES,
    check_supported,
    model_not_found,
    passthrough_fields,
    plain_message,
    route_model,
    takes_openai_messages,
    text_turns,
)
from chatproxy.schemas import ModelCard, ModelList

DONE = b"data: [DONE]\n\n"


def completion_id() -> str:
    """`chatcmpl-` and 128 random bits, as OpenAI's ids look; not secrets, so the PRNG."""
    return f"chatcmpl-{getrandbits(128):032x}"


class OpenAIFramer:
    """`chat.completion.chunk` events, usage last when asked for, then `[DONE]`.

    Chunks keep to `ChatCompletionChunk` (a test holds them to it) but are assembled from
    bytes: the envelope is the same for every chunk of a stream, so it is encoded once and
    each chunk encodes only its delta, a third of the cost of building the models.
    """

    def __init__(self, model: str, include_usage: bool, conversation_id: str | None = None) -> None:
        self.include_usage = include_usage
        self.role_sent = False
        envelope = {
            "id": completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        if conversation_id is not None:
            envelope["conversation_id"] = conversation_id
        self._head = b"data: " + pydantic_core.to_json(envelope)[:-1]  # without its `}`

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": delta}
        if finish is not None:
            choice["finish_reason"] = finish
        return self._head + b',"choices":[' + pydantic_core.to_json(choice) + b"]}\n\n"

    def delta(self, delta: Delta) -> bytes:
        if not delta.content and not delta.tool_calls and self.role_sent:
            return b""
        fields: dict[str, Any] = {}
        if not self.role_sent:
            fields["role"] = "assistant"
            self.role_sent = True
        if delta.content or not delta.tool_calls:
            fields["content"] = delta.content
        if delta.tool_calls:
            fields["tool_calls"] = delta.tool_calls
        return self._chunk(fields)

    def done(self, result: StreamResult) -> bytes:
        out = b"" if self.role_sent else self._chunk({"role": "assistant", "content": ""})
        out += self._chunk({}, result.finish_reason)
        if self.include_usage and result.usage is not None:
            usage = pydantic_core.to_json(result.usage.as_dict())
            out += self._head + b',"choices":[],"usage":' + usage + b"}\n\n"
        return out + DONE

    def error(self, exc: ChatProxyError) -> bytes:
        envelope = {"error": {"message": exc.message, "type": exc.type, "code": exc.type}}
        return sse(json.dumps(envelope, ensure_ascii=False)) + DONE


async def chat_completions(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    body = await parse_body(request, OpenAIChatRequest, settings.max_body_bytes)
    check_message_count(body.messages, settings.max_messages)
    conversation_id = conversation_id_of(request, body.conversation_id)
    owner = client_owner(request) if conversation_id else ""
    model_name = body.model or await stored_model(app, conversation_id, owner)
    call = await build_call(app, body, model_name, conversation_id, owner)
    turn = await open_turn(app, call)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        framer = OpenAIFramer(model_name, include_usage, conversation_id)
        return await relay(request, turn.stream(), framer)
    completion = await turn.complete()
    return completion_response(completion, model_name, conversation_id)


async def build_call(
    app: web.Application,
    body: OpenAIChatRequest,
    model_name: str,
    conversation_id: str | None,
    owner: str,
) -> ChatCall:
    """The pipeline's call for an OpenAI chat request (the Responses API builds one too)."""
    settings, providers = app[SETTINGS], app[PROVIDERS]
    provider, model = await route_model(model_name, providers, settings.default_provider)
    capabilities = providers.get(provider).capabilities
    check_supported(body, provider, capabilities)
    if takes_openai_messages(body, capabilities):
        # OpenAI itself takes tool calls, tool results and image parts as they came; GigaChat's
        # client translates them into its function-calling dialect.
        openai_messages: list[OpenAIMessage] | None = body.messages
        messages = text_turns(body.messages) if conversation_id else []
    else:
        openai_messages = None
        messages = [plain_message(m, i) for i, m in enumerate(body.messages)]
    return ChatCall(
        provider=provider,
        messages=messages,
        model=model,
        openai_messages=openai_messages,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_tokens or body.max_completion_tokens,
        stop=stop_list(body.stop),
        extra=passthrough_fields(body, capabilities),
        conversation_id=conversation_id,
        owner=owner,
        request_id=request_id_var.get(),
    )


async def stored_model(app: web.Application, conversation_id: str | None, owner: str) -> str:
    """No model named: the conversation's default `provider/model`, if it has one."""
    history = app.get(HISTORY)
    stored = None
    if history is not None and conversation_id is not None:
        with contextlib.suppress(NotFoundError):
            stored = await history.model(conversation_id, owner)
    if stored is None:
        raise InvalidRequestError(
            "model: Field required (or name a conversation that has a default model)",
            param="model",
        )
    return stored


def completion_response(
    completion: Completion, model: str, conversation_id: str | None = None
) -> web.Response:
    """A `ChatCompletion` (openai_schemas.py, which a test holds this to) built as a dict:
    a third of the cost of building and dumping the models on every request."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.content or (None if completion.tool_calls else ""),
    }
    if completion.tool_calls:
        message["tool_calls"] = completion.tool_calls
    answer = {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": completion.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": completion.usage.as_dict(),
        "system_fingerprint": None,
    }
    if conversation_id is not None:  # chatproxy's own field; OpenAI clients keep extras
        answer["conversation_id"] = conversation_id
    return web.Response(body=pydantic_core.to_json(answer), content_type="application/json")


async def list_models(request: web.Request) -> web.Response:
    return json_response(ModelList(data=await model_cards(request.app[PROVIDERS])))


def find_card(cards: list[ModelCard], wanted: str) -> ModelCard | None:
    """`provider/model` (or `openai/model`) by its id; any other name by the model it names,
    as chat routes it (a bare name, or vLLM's `org/model` that a provider serves whole)."""
    prefix, slash, rest = wanted.partition("/")
    provider = ALIASES.get(prefix, prefix)
    if slash and provider in PROVIDER_NAMES:
        ids = (wanted, f"{provider}/{rest}")
        return next((card for card in cards if card.id in ids), None)
    return next((card for card in cards if card.model == wanted), None)


async def retrieve_model(request: web.Request) -> web.Response:
    """`GET /v1/models/{id}`: the id may hold slashes, as the SDK sends them (`%2F`) or not."""
    wanted = request.match_info["model"]
    card = find_card(await model_cards(request.app[PROVIDERS]), wanted)
    if card is None:
        raise model_not_found(wanted)
    return json_response(card)
