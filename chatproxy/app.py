"""create_app(settings): wires the application together, and nothing else."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Middleware

from chatproxy.access import load_api_keys
from chatproxy.compat import setup_compat_routes
from chatproxy.config import PROVIDER_NAMES, Settings
from chatproxy.gateway import (
    Cors,
    TrustedProxies,
    forwarded_for,
    mount_under,
    normalized_root,
    to_root_page,
    trusted_networks,
)
from chatproxy.handlers import chat, docs, meta, openai
from chatproxy.handlers.history import setup_history_routes
from chatproxy.handlers.openai_routes import setup_openai_routes
from chatproxy.handlers.page import setup_page_routes
from chatproxy.history.wiring import history_context
from chatproxy.keyring import KeyRing
from chatproxy.keys import API_KEYS, LIMITS, PROVIDERS, REDACTOR, ROOT_PATH, SETTINGS, STARTED
from chatproxy.limits import Limits, add_rate_limit_headers, rate_limit_context
from chatproxy.metrics.web import setup_metrics
from chatproxy.middlewares import api_key_check, request_context
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
    docs.setup_docs_routes(app)
    setup_openai_routes(app)
    setup_page_routes(app)
    setup_compat_routes(app)
    setup_metrics(app)
    # Every fixed route goes above this line: what follows catches /{provider}/.
    app.router.add_get("/{provider}/models", meta.provider_models)
    for name in PROVIDER_NAMES:
        handler = chat.chat_handler(name)
        app.router.add_route("*", f"/{name}/", handler)
        app.router.add_route("*", f"/{name}", handler)
    app.router.add_route("*", "/{provider}/", chat.unknown_provider)
    app.router.add_route("*", "/{provider}", chat.unknown_provider)


def gateway_middlewares(
    settings: Settings, ring: KeyRing, limits: Limits | None, cors: Cors | None
) -> list[Middleware]:
    """Each layer only when its setting is on: an open server runs request_context alone.
    Outermost first: the forwarded client's address before anything reads it; CORS
    preflights before the key check (a preflight carries no key); budgets per checked key."""
    chain: list[Middleware] = []
    trusted = trusted_networks(settings.trusted_proxies)
    if trusted:
        chain.append(forwarded_for(TrustedProxies(trusted)))
    chain.append(request_context)
    if cors is not None:
        chain.append(cors.preflight)
    if ring or settings.proxy_api_keys_file is not None:  # a reload may turn keys on
        chain.append(
            api_key_check(
                ring,
                root_path=normalized_root(settings.root_path),
                metrics_public=settings.metrics_require_key is False,
            )
        )
    if limits is not None and limits.budgets:
        chain.append(rate_limit_context(ring))
    return chain


async def _close_limits(app: web.Application) -> None:
    await app[LIMITS].close()


def create_app(
    settings: Settings | None = None, *, redactor: Redactor | None = None
) -> web.Application:
    settings = settings if settings is not None else Settings()
    redactor = redactor or Redactor(settings.secrets())
    ring = load_api_keys(settings, redactor)
    limits = Limits.from_settings(settings)
    root = normalized_root(settings.root_path)
    cors = Cors(settings.cors_origins) if settings.cors_origins.strip() else None
    app = web.Application(
        middlewares=gateway_middlewares(settings, ring, limits, cors),
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[REDACTOR] = redactor
    app[STARTED] = time.monotonic()
    app[API_KEYS] = ring
    app[ROOT_PATH] = root
    if limits is not None:
        app[LIMITS] = limits
        app.on_cleanup.append(_close_limits)
        if limits.budgets:
            app.on_response_prepare.append(add_rate_limit_headers)
    if cors is not None:
        app.on_response_prepare.append(cors.on_response_prepare)
    app.cleanup_ctx.append(providers_context)
    app.cleanup_ctx.append(history_context)
    app.on_shutdown.append(_mark_shutting_down)
    setup_routes(app)
    if root:
        mount_under(app, root)
        # Also at the bare paths: probes that reach the process without the gateway.
        app.router.add_get("/health", meta.health)
        app.router.add_get("/ready", meta.ready)
        app.router.add_get(root, to_root_page)
    return app
