"""create_app(settings): wires the application together, and nothing else."""

from __future__ import annotations

import time

from aiohttp import web

from chatproxy.config import PROVIDER_NAMES, Settings
from chatproxy.handlers import chat, meta, openai
from chatproxy.handlers.history import setup_history_routes
from chatproxy.history.wiring import history_context
from chatproxy.keys import PROVIDERS, REDACTOR, SETTINGS, STARTED
from chatproxy.middlewares import request_context, require_api_key
from chatproxy.redact import Redactor
from chatproxy.wiring import providers_context


async def _mark_shutting_down(app: web.Application) -> None:
    """Readiness turns 503 as soon as SIGTERM arrives, so the gateway stops sending."""
    if PROVIDERS in app:
        app[PROVIDERS].shutting_down = True


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", meta.health)
    app.router.add_get("/ready", meta.ready)
    app.router.add_get("/status", meta.status)
    app.router.add_get("/models", meta.all_models)
    app.router.add_post("/v1/chat/completions", openai.chat_completions)
    app.router.add_get("/v1/models", openai.list_models)
    setup_history_routes(app)
    # Every fixed route goes above this line: what follows catches /{provider}/.
    app.router.add_get("/{provider}/models", meta.provider_models)
    for name in PROVIDER_NAMES:
        handler = chat.chat_handler(name)
        app.router.add_route("*", f"/{name}/", handler)
        app.router.add_route("*", f"/{name}", handler)
    app.router.add_route("*", "/{provider}/", chat.unknown_provider)
    app.router.add_route("*", "/{provider}", chat.unknown_provider)


def create_app(
    settings: Settings | None = None, *, redactor: Redactor | None = None
) -> web.Application:
    settings = settings if settings is not None else Settings()
    app = web.Application(
        # The key check is only wired in when keys are configured: no cost on open servers.
        middlewares=[request_context] + ([require_api_key] if settings.api_keys else []),
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[REDACTOR] = redactor or Redactor(settings.secrets())
    app[STARTED] = time.monotonic()
    app.cleanup_ctx.append(providers_context)
    app.cleanup_ctx.append(history_context)
    app.on_shutdown.append(_mark_shutting_down)
    setup_routes(app)
    return app
