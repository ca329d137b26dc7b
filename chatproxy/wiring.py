"""Builds each configured provider's client from Settings; the others get a reason."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from chatproxy.clients.ernie import ErnieClient
from chatproxy.clients.gigachat import GigaChatClient
from chatproxy.clients.http import Timeouts, Upstream
from chatproxy.clients.openai import OpenAIClient
from chatproxy.clients.proxy import ProxyRules
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
        max_body_bytes=settings.max_upstream_body_bytes,
    )


def proxy_rules(settings: Settings, redactor: Redactor) -> ProxyRules:
    """UPSTREAM_PROXY, else the environment's proxy variables, read once for the process."""
    explicit = settings.upstream_proxy.get_secret_value() if settings.upstream_proxy else None
    rules = ProxyRules(explicit)
    for password in rules.passwords():
        redactor.keep(password)
    return rules


def make_upstream(
    settings: Settings,
    redactor: Redactor,
    provider: str,
    ssl_context: ssl.SSLContext | bool = True,
    *,
    proxies: ProxyRules | None = None,
) -> Upstream:
    """One reused session per provider, with its own connection pool."""
    connector = aiohttp.TCPConnector(limit=256, ssl=ssl_context)
    # No trust_env: it sends a proxy and netrc lookup to a thread on every request (~1 ms
    # CPU). ProxyRules reads the same proxy variables once instead.
    session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": "chatproxy"})
    return Upstream(
        session,
        provider=provider,
        timeouts=timeouts_from(settings),
        redactor=redactor,
        proxies=proxies,
    )


def add_openai(
    providers: Providers, settings: Settings, redactor: Redactor, proxies: ProxyRules
) -> None:
    # Self-hosted OpenAI-compatible servers (vLLM, Ollama) often need no key at all.
    if settings.openai_api_key is None and OPENAI_DEFAULT_HOST in settings.openai_base_url:
        providers.missing["chatgpt"] = "set OPENAI_API_KEY"
        return
    providers.add(
        OpenAIClient(
            make_upstream(settings, redactor, "chatgpt", proxies=proxies),
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            default_model=settings.openai_model,
        )
    )


def gigachat_tls(settings: Settings) -> ssl.SSLContext | bool:
    """GigaChat chains to the Russian national root CA: trust the bundle the operator names."""
    if not settings.gigachat_verify_ssl:
        log.warning(
            "GIGACHAT_VERIFY_SSL=false: GigaChat's certificate is NOT checked; "
            "use GIGACHAT_CA_BUNDLE outside development"
        )
        return False
    if settings.gigachat_ca_bundle is None:
        return True
    return ssl.create_default_context(cafile=str(settings.gigachat_ca_bundle))


def add_gigachat(
    providers: Providers, settings: Settings, redactor: Redactor, proxies: ProxyRules
) -> None:
    if settings.gigachat_credentials is None:
        providers.missing["gigachat"] = "set GIGACHAT_CREDENTIALS (the base64 authorization key)"
        return
    try:
        tls = gigachat_tls(settings)
    except (OSError, ssl.SSLError) as exc:
        providers.missing["gigachat"] = (
            f"GIGACHAT_CA_BUNDLE {settings.gigachat_ca_bundle} cannot be loaded: {exc}"
        )
        log.error("gigachat is off: %s", providers.missing["gigachat"])
        return
    providers.add(
        GigaChatClient(
            make_upstream(settings, redactor, "gigachat", tls, proxies=proxies),
            base_url=settings.gigachat_base_url,
            auth_url=settings.gigachat_auth_url,
            credentials=settings.gigachat_credentials,
            scope=settings.gigachat_scope,
            default_model=settings.gigachat_model,
        )
    )


def add_ernie(
    providers: Providers, settings: Settings, redactor: Redactor, proxies: ProxyRules
) -> None:
    if settings.ernie_api_key is None or settings.ernie_secret_key is None:
        unset = [
            name
            for name, value in (
                ("ERNIE_API_KEY", settings.ernie_api_key),
                ("ERNIE_SECRET_KEY", settings.ernie_secret_key),
            )
            if value is None
        ]
        providers.missing["ernie"] = f"set {' and '.join(unset)}"
        return
    providers.add(
        ErnieClient(
            make_upstream(settings, redactor, "ernie", proxies=proxies),
            base_url=settings.ernie_base_url,
            auth_url=settings.ernie_auth_url,
            api_key=settings.ernie_api_key,
            secret_key=settings.ernie_secret_key,
            default_model=settings.ernie_model,
        )
    )


def add_local(providers: Providers, settings: Settings) -> None:
    """Start loading the model on its worker thread; torch is imported only from here on."""
    if settings.local_model is None:
        providers.missing["local"] = "set LOCAL_MODEL (a model folder or a hub id)"
        return
    from chatproxy.local.loader import INSTALL_HINT, missing_packages

    absent = missing_packages()
    if absent:
        providers.missing["local"] = (
            f"LOCAL_MODEL is set but {' and '.join(absent)} not installed: {INSTALL_HINT}"
        )
        log.error("local provider is off: %s", providers.missing["local"])
        return
    from chatproxy.local.client import LocalClient
    from chatproxy.local.engine import LocalEngine

    engine = LocalEngine(
        model_name=settings.local_model,
        device=settings.local_device,
        dtype=settings.local_dtype,
        max_batch=settings.local_max_batch,
        max_queue=settings.local_max_queue,
        batch_window=settings.local_batch_window_ms / 1000,
        continuous=settings.local_continuous_batching,
    )
    engine.start()
    providers.add(LocalClient(engine))


async def providers_context(app: web.Application) -> AsyncIterator[None]:
    """Open every configured provider's client for the app's lifetime, then close them."""
    settings, redactor = app[SETTINGS], app[REDACTOR]
    providers = Providers(models_ttl=settings.models_cache_ttl)
    proxies = proxy_rules(settings, redactor)
    add_openai(providers, settings, redactor, proxies)
    add_gigachat(providers, settings, redactor, proxies)
    add_ernie(providers, settings, redactor, proxies)
    add_local(providers, settings)
    app[PROVIDERS] = providers
    log.info("providers on: %s", ", ".join(providers.clients) or "none")
    for name, client in providers.clients.items():
        via = client.status().get("proxy")
        if via:
            log.info("%s: upstream calls go through the proxy %s", name, via)
    for name, reason in providers.missing.items():
        log.info("provider %s is off: %s", name, reason)
    yield
    await providers.close()
