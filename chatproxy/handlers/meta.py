"""Health, readiness, status and model lists."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web

from chatproxy import __version__
from chatproxy.compat import pure_model_api
from chatproxy.errors import ChatProxyError
from chatproxy.handlers.common import json_response
from chatproxy.keys import HISTORY, PROVIDERS, REDACTOR, STARTED
from chatproxy.providers import Providers
from chatproxy.schemas import ModelCard, ModelList

log = logging.getLogger(__name__)
HEALTH_BODY = b'{"status":"ok"}'


async def health(request: web.Request) -> web.Response:
    return web.Response(body=HEALTH_BODY, content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    is_ready, states = request.app[PROVIDERS].readiness()
    history = request.app.get(HISTORY)
    if history is not None:
        reason = await history.not_ready_reason()
        states["history"] = reason or "ok"
        is_ready = is_ready and reason is None
    return web.json_response(
        {"status": "ready" if is_ready else "not_ready", "providers": states},
        status=200 if is_ready else 503,
    )


async def status(request: web.Request) -> web.Response:
    providers = request.app[PROVIDERS]
    body = json.dumps(
        {
            "version": __version__,
            "uptime_s": round(time.monotonic() - request.app[STARTED], 1),
            "shutting_down": providers.shutting_down,
            "providers": providers.status(),
            "history": _history_status(request.app),
            # The older Qwen/Llama server's /status fields, so its clients read it unchanged.
            **await pure_model_api.status_fields(request),
        }
    )
    # URLs and provider states are operator configuration: scrubbed as log lines are.
    return web.Response(text=request.app[REDACTOR](body), content_type="application/json")


def _history_status(app: web.Application) -> dict[str, Any]:
    history = app.get(HISTORY)
    if history is None:
        return {"enabled": False}
    return {"enabled": True, "store": history.description, "max_turns": history.max_turns}


async def model_cards(providers: Providers) -> list[ModelCard]:
    """Every configured provider's models as `provider/model`; a failing upstream lists its
    default model only, so one provider being down does not hide the others."""
    cards: list[ModelCard] = []
    for name, client in providers.clients.items():
        try:
            names = await providers.models_cache.get(client)
        except ChatProxyError as exc:
            log.warning("listing %s models failed: %s", name, exc.message)
            names = [client.default_model]
        if client.default_model not in names:
            names = [client.default_model, *names]
        cards.extend(
            ModelCard(id=f"{name}/{model}", owned_by=name, provider=name, model=model)
            for model in names
        )
    return cards


async def all_models(request: web.Request) -> web.Response:
    return json_response(ModelList(data=await model_cards(request.app[PROVIDERS])))


async def provider_models(request: web.Request) -> web.Response:
    providers = request.app[PROVIDERS]
    name = request.match_info["provider"]
    client = providers.get(name)
    names = await providers.models_cache.get(client)
    return web.json_response(
        {"provider": name, "default_model": client.default_model, "models": names}
    )
