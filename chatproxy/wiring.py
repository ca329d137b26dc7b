"""Builds each configured provider's client from Settings; the others get a reason."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from chatproxy.clients.http import Timeouts, Upstream
from chatproxy.clients.openai import OpenAIClient
from chatproxy.config import Settings
from chatproxy.keys import PROVIDERS, REDACTOR, SETTINGS
from chatproxy.providers import Providers
from chatproxy.redact import Redactor

log = logging.getLogger(__name__)
OPENAI_DEFAULT_HOST = "api.openai.com"


def timeouts_from(settings: Settings) -> Timeouts:
    return Timeouts(
        total=settings.upstream_timeout,
        connect=settings.upstream_connect_timeout,
        first_byte=settings.first_byte_timeout(),
        between_chunks=settings.upstream_read_timeout,
        retries=settings.upstream_retries,
    )


def make_upstream(
    settings: Settings, redactor: Redactor, provider: str, ssl_context: ssl.SSLContext | bool = True
) -> Upstream:
    """One reused session per provider, with its own connection pool."""
    connector = aiohttp.TCPConnector(limit=256, ssl=ssl_context)
    # No trust_env: it sends a proxy and netrc lookup to a thread on every request (~1 ms CPU).
    session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": "chatproxy"})
    return Upstream(session, provider=provider, timeouts=timeouts_from(settings), redactor=redactor)


def add_openai(providers: Providers, settings: Settings, redactor: Redactor) -> None:
    # Self-hosted OpenAI-compatible servers (vLLM, Ollama) often need no key at all.
    if settings.openai_api_key is None and OPENAI_DEFAULT_HOST in settings.openai_base_url:
        providers.missing["chatgpt"] = "set OPENAI_API_KEY"
        return
    providers.add(
        OpenAIClient(
            make_upstream(settings, redactor, "chatgpt"),
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            default_model=settings.openai_model,
        )
    )


async def providers_context(app: web.Application) -> AsyncIterator[None]:
    """Open every configured provider's client for the app's lifetime, then close them."""
    settings, redactor = app[SETTINGS], app[REDACTOR]
    providers = Providers(models_ttl=settings.models_cache_ttl)
    add_openai(providers, settings, redactor)
    for name in ("gigachat", "ernie", "local"):
        providers.missing.setdefault(name, "not implemented in this build")
    app[PROVIDERS] = providers
    log.info("providers: %s", ", ".join(providers.clients) or "none configured")
    yield
    await providers.close()
