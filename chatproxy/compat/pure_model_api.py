"""The pure Qwen/Llama model API (Traditional-Chinese README): `POST /chat {message,
max_tokens, temperature}` answers `{message, response, status}`; `POST /reset` forgets the
conversation; `GET /status` tells the model, device, conversation length and memory.

It kept one conversation for everyone; here it is one per API key (one in all without
keys), kept as `pure-model-api`. Its `/status` fields join chatproxy's own `/status`."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chatproxy.access import client_owner
from chatproxy.compat.common import (
    answer,
    ask,
    clear_conversation,
    history_layer,
    provider_for,
    stored_messages,
)
from chatproxy.errors import ServiceUnavailableError
from chatproxy.handlers.common import validated
from chatproxy.history.layer import READY_TIMEOUT
from chatproxy.keys import HISTORY, PROVIDERS
from chatproxy.openapi import Operation, register

OWN_PROVIDER = "local"  # it ran Qwen or Llama in its own process
CONVERSATION = "pure-model-api"
# The older server's defaults, which its clients relied on by leaving the fields out.
DEFAULT_MAX_TOKENS = 512
DEFAULT_TEMPERATURE = 0.7


class MessageRequest(BaseModel):
    """`POST /chat` of the pure model API."""

    model_config = ConfigDict(extra="ignore")

    message: str = Field(min_length=1)
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1)
    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0, le=2)


class MessageAnswer(BaseModel):
    message: str
    response: str
    status: Literal["success"] = "success"


class ResetAnswer(BaseModel):
    status: Literal["success"] = "success"
    message: str


async def chat(request: web.Request, data: dict[str, Any]) -> web.Response:
    """`POST /chat {"message", ...}` (told apart by `routes.chat`)."""
    history_layer(request)
    body = validated(MessageRequest, data)
    completion = await ask(
        request,
        provider_for(request, OWN_PROVIDER),
        CONVERSATION,
        body.message,
        temperature=body.temperature,
        max_tokens=body.max_tokens,
    )
    return answer({"message": body.message, "response": completion.content, "status": "success"})


async def reset(request: web.Request) -> web.Response:
    """`POST /reset`: the conversation starts again (a body, if any, is ignored)."""
    layer = history_layer(request)
    await clear_conversation(layer, CONVERSATION, client_owner(request))
    return answer({"status": "success", "message": "conversation reset"})


async def status_fields(request: web.Request) -> dict[str, Any]:
    """The older server's `/status` fields, for chatproxy's `/status` to carry beside its
    own: `model_name`, `device`, `memory_allocated` of the provider its `/chat` uses, and
    the caller's `conversation_length` (0 without the history layer, null when the store
    does not answer within a second)."""
    try:
        own: str | None = provider_for(request, OWN_PROVIDER)
    except ServiceUnavailableError:  # not configured here: /status still answers, these null
        own = None
    client = request.app[PROVIDERS].clients.get(own) if own is not None else None
    details = client.status() if client is not None else {}
    default_model = client.default_model if client is not None else None
    return {
        "model_name": details.get("model") or default_model,
        "device": details.get("device"),
        "conversation_length": await _conversation_length(request),
        "memory_allocated": details.get("memory_allocated"),
    }


async def _conversation_length(request: web.Request) -> int | None:
    layer = request.app.get(HISTORY)
    if layer is None:
        return 0
    # /status answers, and quickly, even when the store does not: as /ready, within 1 s.
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            messages = await stored_messages(layer, CONVERSATION, client_owner(request))
    except (ServiceUnavailableError, TimeoutError):
        return None
    return len(messages or [])


register(
    Operation(
        "POST",
        "/reset",
        "Start the conversation again (the pure Qwen/Llama API's shape)",
        "compat",
        description="Needs HISTORY_STORE. Forgets the turns of the conversation that "
        "`POST /chat {message}` keeps (one per API key).",
        responses={200: ResetAnswer},
        errors=(503,),
    )
)
