"""The OpenAI conversation server (Korean README): conversations and a chosen model per
`client_name` (kept as `client:<name>`): `POST /query {input, client_name}` answers
`{response}`; `GET/POST /model`; `GET/DELETE /history?client_name=`. Its `GET /models` is
chatproxy's own (OpenAI's list shape; ids are `provider/model`)."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, RootModel

from chatproxy.access import client_owner
from chatproxy.compat.common import (
    answer,
    ask,
    clear_conversation,
    conversation_id,
    create_conversation,
    history_layer,
    json_object,
    provider_for,
    stored_messages,
)
from chatproxy.config import PROVIDER_NAMES
from chatproxy.errors import InvalidRequestError, NotFoundError
from chatproxy.handlers.common import validated
from chatproxy.history.layer import HistoryLayer
from chatproxy.keys import PROVIDERS
from chatproxy.openapi import Operation, register
from chatproxy.routing import ALIASES
from chatproxy.schemas import Name

OWN_PROVIDER = "chatgpt"
PREFIX = "client"
CLIENT_NAME = "client_name"
ClientName = Annotated[str, Field(min_length=1, max_length=1024)]


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str = Field(min_length=1)
    client_name: ClientName


class QueryAnswer(BaseModel):
    response: str


class ClientQuery(BaseModel):
    client_name: ClientName


class ModelRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Name = Field(description="a bare name (the compat provider's) or provider/model")
    client_name: ClientName


class ModelAnswer(BaseModel):
    model: str


class HistoryEntry(BaseModel):
    role: str
    content: str
    timestamp: str = Field(description="ISO 8601")


class HistoryAnswer(RootModel[list[HistoryEntry]]):
    """The client's messages, oldest first; an unknown client has none."""


class Cleared(BaseModel):
    message: str


def _client(request: web.Request) -> tuple[HistoryLayer, str, str]:
    """The history layer, the client's conversation id and the caller's owner."""
    layer = history_layer(request)
    name = validated(ClientQuery, dict(request.query)).client_name
    return layer, conversation_id(PREFIX, name), client_owner(request)


def _provider_model(model: str, provider: str) -> str:
    """`provider/model` for the store: a known provider prefix is kept, else the name is
    one of `provider`'s."""
    prefix, slash, bare = model.partition("/")
    named = ALIASES.get(prefix, prefix)
    if slash and bare and named in PROVIDER_NAMES:
        return f"{named}/{bare}"
    return f"{provider}/{model}"


async def _chosen(layer: HistoryLayer, conversation: str, owner: str) -> str | None:
    """The client's chosen `provider/model`, or None."""
    try:
        return await layer.model(conversation, owner)
    except NotFoundError:
        return None


async def query(request: web.Request) -> web.Response:
    """`POST /query`: the client's chosen provider and model, or COMPAT_PROVIDER's or
    chatgpt's default."""
    layer = history_layer(request)
    body = validated(QueryRequest, await json_object(request))
    conversation, owner = conversation_id(PREFIX, body.client_name), client_owner(request)
    chosen = await _chosen(layer, conversation, owner)
    provider = chosen.partition("/")[0] if chosen else provider_for(request, OWN_PROVIDER)
    completion = await ask(request, provider, conversation, body.input)
    return answer({"response": completion.content})


async def get_model(request: web.Request) -> web.Response:
    """`GET /model?client_name=`: the name as it was set, or the provider's default."""
    layer, conversation, owner = _client(request)
    provider = provider_for(request, OWN_PROVIDER)
    chosen = await _chosen(layer, conversation, owner)
    if chosen is None:
        return answer({"model": request.app[PROVIDERS].get(provider).default_model})
    chosen_provider, _, bare = chosen.partition("/")
    return answer({"model": bare if chosen_provider == provider else chosen})


async def set_model(request: web.Request) -> web.Response:
    """`POST /model {model, client_name}`: the model the client's next queries use (a name
    the provider does not serve fails there, with its message)."""
    layer = history_layer(request)
    body = validated(ModelRequest, await json_object(request))
    conversation, owner = conversation_id(PREFIX, body.client_name), client_owner(request)
    model = _provider_model(body.model, provider_for(request, OWN_PROVIDER))
    if not await create_conversation(layer, conversation, owner, model):
        await layer.set_model(conversation, owner, model)
    return answer({"model": body.model})


async def get_history(request: web.Request) -> web.Response:
    """`GET /history?client_name=`: the client's messages with their times."""
    _require_client_name(request)
    layer, conversation, owner = _client(request)
    messages = await stored_messages(layer, conversation, owner) or []
    return answer(
        [
            {"role": m.role, "content": m.content, "timestamp": m.timestamp.isoformat()}
            for m in messages
            if m.role in ("user", "assistant")
        ]
    )


async def delete_history(request: web.Request) -> web.Response:
    """`DELETE /history?client_name=`: forget the messages, keep the chosen model."""
    _require_client_name(request)
    layer, conversation, owner = _client(request)
    await clear_conversation(layer, conversation, owner)
    return answer({"message": "conversation history cleared"})


def _require_client_name(request: web.Request) -> None:
    """`/history` without a client name is no older server's route: say which ones are."""
    if CLIENT_NAME not in request.query:
        raise InvalidRequestError(
            f"{request.method} /history needs ?client_name= (the older conversation server's "
            f"route); a conversation of chatproxy's own is {request.method} "
            "/history/{conversation_id}",
            param=CLIENT_NAME,
        )


_CLIENT_QUERY = {CLIENT_NAME: "the client's name (required)"}
register(
    Operation(
        "POST",
        "/query",
        "Ask in the client's conversation (the older conversation server's shape)",
        "compat",
        description="Needs HISTORY_STORE. The conversation and model are the client_name's.",
        request=QueryRequest,
        responses={200: QueryAnswer},
        errors=(503,),
    ),
    Operation(
        "GET",
        "/model",
        "The client's model (the older conversation server's shape)",
        "compat",
        description="Needs HISTORY_STORE. A bare name for COMPAT_PROVIDER's (or chatgpt's) "
        "models, else provider/model; the provider's default when none was chosen.",
        query=_CLIENT_QUERY,
        responses={200: ModelAnswer},
        errors=(400, 503),
    ),
    Operation(
        "POST",
        "/model",
        "Choose the client's model (the older conversation server's shape)",
        "compat",
        description="Needs HISTORY_STORE. A bare name or provider/model (as GET /models "
        "lists them).",
        request=ModelRequest,
        responses={200: ModelAnswer},
        errors=(503,),
    ),
    Operation(
        "GET",
        "/history",
        "The client's messages (the older conversation server's shape)",
        "compat",
        description="Needs HISTORY_STORE and ?client_name=.",
        query=_CLIENT_QUERY,
        responses={200: HistoryAnswer},
        errors=(400, 503),
    ),
    Operation(
        "DELETE",
        "/history",
        "Clear the client's messages (the older conversation server's shape)",
        "compat",
        description="Needs HISTORY_STORE and ?client_name=. The chosen model stays.",
        query=_CLIENT_QUERY,
        responses={200: Cleared},
        errors=(400, 503),
    ),
)
