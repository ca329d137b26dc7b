"""What the older servers' adapters share: the history layer they need, their provider,
their conversation ids, and one turn through the chat pipeline."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

from chatproxy.access import client_owner
from chatproxy.clients.base import Completion
from chatproxy.errors import InvalidRequestError, ServiceUnavailableError
from chatproxy.handlers.common import read_body
from chatproxy.history.base import StoredMessage, valid_conversation_id
from chatproxy.history.layer import HistoryLayer, scoped
from chatproxy.keys import HISTORY, PROVIDERS, SETTINGS
from chatproxy.logs import request_id_var
from chatproxy.pipeline import ChatCall, open_turn
from chatproxy.schemas import Message


def history_layer(request: web.Request) -> HistoryLayer:
    """The history layer, or a 503 saying how to turn it on: these routes keep a
    conversation on the server, as the older servers did."""
    layer = request.app.get(HISTORY)
    if layer is None:
        raise ServiceUnavailableError(
            f"{request.method} {request.path} keeps the conversation on the server, and this "
            "chatproxy keeps none: set HISTORY_STORE (e.g. sqlite:///chatproxy.db) to serve "
            "it, or send the whole conversation to POST /{provider}/ instead"
        )
    return layer


def provider_for(request: web.Request, own: str) -> str:
    """COMPAT_PROVIDER when the operator set one, else the older server's own provider."""
    chosen = request.app[SETTINGS].compat_provider
    if chosen is not None:
        return chosen
    providers = request.app[PROVIDERS]
    if own not in providers.clients and providers.clients:
        # A migrating user most often has another provider's credentials than the older
        # server's own: say which one this route wants, and how to send it elsewhere.
        reason = providers.missing.get(own, "disabled")
        raise ServiceUnavailableError(
            f"{request.method} {request.path} is served by '{own}', as the older server did, "
            f"and '{own}' is not configured ({reason}); or set COMPAT_PROVIDER to one that "
            f"is: {', '.join(sorted(providers.clients))}"
        )
    return own


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (before the older server's shape is known), or a 400."""
    body = await read_body(request, request.app[SETTINGS].max_body_bytes)
    if not body.strip():
        raise InvalidRequestError("request body is empty; send a JSON object")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return data


def conversation_id(prefix: str, name: str) -> str:
    """An older server's own key (an integer, a cookie, a client name) as a conversation id
    in a namespace of its own; a name an id cannot hold is kept by its hash."""
    candidate = f"{prefix}:{name}"
    if valid_conversation_id(candidate):
        return candidate
    # surrogateescape: a cookie's undecodable bytes reach here as surrogates (aiohttp's).
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{prefix}-sha256:{digest}"


async def ask(
    request: web.Request,
    provider: str,
    conversation: str,
    text: str,
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> Completion:
    """One user message through the pipeline, in `conversation`: the stored turns go
    upstream before it, and it and the reply are recorded after."""
    call = ChatCall(
        provider=provider,
        messages=[Message(role="user", content=text)],
        temperature=temperature,
        max_tokens=max_tokens,
        conversation_id=conversation,
        owner=client_owner(request),
        request_id=request_id_var.get(),
    )
    turn = await open_turn(request.app, call)
    return await turn.complete()


async def stored_messages(
    layer: HistoryLayer, conversation: str, owner: str
) -> list[StoredMessage] | None:
    """Every message of the caller's conversation; None when it has none by that id."""
    key = scoped(conversation, owner)
    return await layer.run(lambda: layer.store.messages(key, owner))


async def create_conversation(
    layer: HistoryLayer, conversation: str, owner: str, model: str | None = None
) -> bool:
    """Create the caller's conversation under this id; False when the id is taken."""
    key = scoped(conversation, owner)
    return await layer.run(lambda: layer.store.create(key, owner, model))


async def clear_conversation(layer: HistoryLayer, conversation: str, owner: str) -> None:
    """Forget the turns, keep the conversation and its model (a missing one stays so)."""
    key = scoped(conversation, owner)
    await layer.run(lambda: layer.store.clear(key, owner))


def answer(data: Any, *, status: int = 200) -> web.Response:
    """JSON as the older servers sent it, their scripts' letters kept readable."""
    return web.Response(
        text=json.dumps(data, ensure_ascii=False), status=status, content_type="application/json"
    )
