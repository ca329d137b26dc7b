"""Which embedder a `/v1/embeddings` model name goes to, and the local model's lifetime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from chatproxy.clients.ernie import ErnieClient
from chatproxy.clients.gigachat import GigaChatClient
from chatproxy.clients.openai import OpenAIClient
from chatproxy.config import PROVIDER_NAMES, Settings
from chatproxy.embeddings.base import Embedder
from chatproxy.embeddings.ernie import ErnieEmbedder
from chatproxy.embeddings.gigachat import GigaChatEmbedder
from chatproxy.embeddings.local import LocalEmbedder
from chatproxy.embeddings.openai import OpenAIEmbedder
from chatproxy.errors import ServiceUnavailableError
from chatproxy.keys import PROVIDERS, SETTINGS
from chatproxy.local.embeddings import LocalEmbeddingModel
from chatproxy.providers import Providers
from chatproxy.routing import ALIASES, model_not_found, provider_serving

log = logging.getLogger(__name__)
LOCAL_EMBEDDINGS = web.AppKey("local_embeddings", LocalEmbeddingModel)


def embedding_models(settings: Settings) -> dict[str, str | None]:
    """Each provider's embedding model, as configured."""
    return {
        "chatgpt": settings.openai_embedding_model,
        "gigachat": settings.gigachat_embedding_model,
        "ernie": settings.ernie_embedding_model,
        "local": settings.local_embedding_model,
    }


async def route_embedding_model(
    name: str, settings: Settings, providers: Providers
) -> tuple[str, str]:
    """`provider/model` (`provider/` alone: its configured model); a bare name that is a
    provider's configured model goes there; a name a provider lists whole (vLLM's
    `org/model`) to that provider; any other bare name to DEFAULT_PROVIDER."""
    configured = embedding_models(settings)
    for provider, model in configured.items():
        if model is not None and name == model:
            return provider, model
    prefix, slash, rest = name.partition("/")
    provider = ALIASES.get(prefix, prefix)
    if slash and provider in PROVIDER_NAMES:
        model = rest or configured[provider]
        if model is None or (provider == "local" and model != configured["local"]):
            raise model_not_found(name)  # the local provider embeds with one model only
        return provider, model
    if slash:
        serving = await provider_serving(name, providers)
        if serving is None or serving == "local":
            raise model_not_found(name)
        return serving, name
    return settings.default_provider, name


def embedder_for(app: web.Application, provider: str) -> Embedder:
    """The provider's embedder, over its chat client's session and tokens."""
    if provider == "local":
        model = app.get(LOCAL_EMBEDDINGS)
        if model is None:
            raise ServiceUnavailableError(
                "local embeddings are off: set LOCAL_EMBEDDING_MODEL (a model folder or hub id)"
            )
        return LocalEmbedder(model)
    client = app[PROVIDERS].get(provider)
    if isinstance(client, OpenAIClient):
        return OpenAIEmbedder(client)
    if isinstance(client, GigaChatClient):
        return GigaChatEmbedder(client)
    if isinstance(client, ErnieClient):
        return ErnieEmbedder(client)
    raise ServiceUnavailableError(f"provider '{provider}' has no embeddings")


async def local_embeddings_context(app: web.Application) -> AsyncIterator[None]:
    """Load LOCAL_EMBEDDING_MODEL on its worker while the server starts, when it is set."""
    settings = app[SETTINGS]
    name = settings.local_embedding_model
    if name is None:
        yield
        return
    from chatproxy.local.loader import INSTALL_HINT, missing_packages

    absent = missing_packages()
    if absent:
        log.error("local embeddings are off: %s not installed: %s", absent, INSTALL_HINT)
        yield
        return
    model = LocalEmbeddingModel(
        name,
        device=settings.local_device,
        dtype=settings.local_dtype,
        max_batch=settings.local_max_batch,
    )
    model.start()
    app[LOCAL_EMBEDDINGS] = model
    try:
        yield
    finally:
        model.stop()
