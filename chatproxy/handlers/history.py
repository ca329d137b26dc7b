"""`/history`: create a conversation, read it, clear it, and keep its default model."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from chatproxy.access import client_owner
from chatproxy.config import PROVIDER_NAMES
from chatproxy.errors import InvalidRequestError, NotFoundError
from chatproxy.handlers.common import parse_body
from chatproxy.history.base import valid_conversation_id
from chatproxy.history.layer import HistoryLayer
from chatproxy.keys import HISTORY, SETTINGS
from chatproxy.routing import ALIASES
from chatproxy.schemas import NAME_RULE, Name


class ModelChoice(BaseModel):
    """Body of `POST /history` (optional) and `PUT /history/{id}/model`."""

    model_config = ConfigDict(extra="forbid")

    model: Name | None = None


def _layer(request: web.Request) -> HistoryLayer:
    layer = request.app.get(HISTORY)
    if layer is None:
        raise NotFoundError(
            "no conversations are kept here: the history layer is off (set HISTORY_STORE)"
        )
    return layer


def _conversation_id(request: web.Request) -> str:
    conversation_id = request.match_info["conversation_id"]
    if not valid_conversation_id(conversation_id):
        raise InvalidRequestError(
            f"conversation_id: {NAME_RULE}",
            param="conversation_id",
        )
    return conversation_id


def _provider_model(model: str | None) -> str | None:
    """A default model is `provider/model`, so it can serve every route."""
    if model is None:
        return None
    prefix, slash, name = model.partition("/")
    provider = ALIASES.get(prefix, prefix)  # openai/... as /v1 takes it
    if not slash or not name or provider not in PROVIDER_NAMES:
        raise InvalidRequestError(
            f"model: '{model}' is not provider/model (providers: {', '.join(PROVIDER_NAMES)})",
            param="model",
        )
    return f"{provider}/{name}"


async def _choice(request: web.Request, *, required: bool) -> str | None:
    if not required and not request.can_read_body:
        return None
    body = await parse_body(request, ModelChoice, request.app[SETTINGS].max_body_bytes)
    return _provider_model(body.model)


async def create(request: web.Request) -> web.Response:
    layer = _layer(request)
    model = await _choice(request, required=False)
    conversation_id = await layer.create(client_owner(request), model)
    return web.json_response({"conversation_id": conversation_id, "model": model}, status=201)


async def show(request: web.Request) -> web.Response:
    layer = _layer(request)
    return web.json_response(await layer.show(_conversation_id(request), client_owner(request)))


async def delete(request: web.Request) -> web.Response:
    layer, conversation_id = _layer(request), _conversation_id(request)
    await layer.delete(conversation_id, client_owner(request))
    return web.json_response({"conversation_id": conversation_id, "deleted": True})


async def get_model(request: web.Request) -> web.Response:
    layer, conversation_id = _layer(request), _conversation_id(request)
    model = await layer.model(conversation_id, client_owner(request))
    return web.json_response({"conversation_id": conversation_id, "model": model})


async def put_model(request: web.Request) -> web.Response:
    layer, conversation_id = _layer(request), _conversation_id(request)
    model = await _choice(request, required=True)
    await layer.set_model(conversation_id, client_owner(request), model)
    return web.json_response({"conversation_id": conversation_id, "model": model})


def setup_history_routes(app: web.Application) -> None:
    """The model route first: an id may hold `/`, so `/history/a/b/model` is a/b's model."""
    app.router.add_post("/history", create)
    app.router.add_get("/history/{conversation_id:.+}/model", get_model)
    app.router.add_put("/history/{conversation_id:.+}/model", put_model)
    app.router.add_get("/history/{conversation_id:.+}", show)
    app.router.add_delete("/history/{conversation_id:.+}", delete)
