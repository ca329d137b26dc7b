"""Shared fixtures: isolated settings, the real app, fake upstreams, no retry sleeps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from chatproxy.app import create_app
from chatproxy.config import Settings
from tests.fakes.ernie_server import API_KEY as ERNIE_API_KEY
from tests.fakes.ernie_server import SECRET_KEY as ERNIE_SECRET_KEY
from tests.fakes.ernie_server import FakeErnie
from tests.fakes.gigachat_server import CREDENTIALS as GIGACHAT_CREDENTIALS
from tests.fakes.gigachat_server import SCOPE as GIGACHAT_SCOPE
from tests.fakes.gigachat_server import FakeGigaChat
from tests.fakes.openai_server import FakeOpenAI

OPENAI_KEY = "sk-test-SECRET-0123456789abcdef"
# Every test fails if chatproxy writes a secret or an issued token anywhere (see the module).
pytest_plugins = ["tests.secret_guard", "tests.browser"]
AiohttpClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
AiohttpServer = Callable[..., Awaitable[TestServer]]
Client = TestClient[web.Request, web.Application]


def _patch_aioresponses() -> None:
    """aioresponses 0.7.9 builds ClientResponse without aiohttp 3.14's `stream_writer`."""
    from aioresponses import core

    class Response(aiohttp.ClientResponse):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("stream_writer", None)
            super().__init__(*args, **kwargs)

    core.ClientResponse = Response  # type: ignore[attr-defined]


_patch_aioresponses()


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No test sees the developer's environment or .env."""
    names = set(Settings.model_fields) | {
        "URL_GPT",
        "API_KEY",
        "SCOPE",
        "AUTH_CREDENTIALS",
        "URL_GIGACHAT",
        "AUTH_URL",
    }
    for name in names:
        monkeypatch.delenv(name.upper(), raising=False)
    # A proxy in the developer's shell would carry the tests' loopback calls away.
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "chatproxy.clients.http.retry_delay", lambda attempt, retry_after=None, rand=None: 0.0
    )


async def serve(aiohttp_client: AiohttpClient, settings: Settings) -> Client:
    """The real app on a test server that, like `make run`, cancels a handler whose client
    went away."""
    return await aiohttp_client(create_app(settings), server_kwargs={"handler_cancellation": True})


def make_settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)


@pytest.fixture
async def fake_openai(aiohttp_server: AiohttpServer) -> FakeOpenAI:
    fake = FakeOpenAI()
    server = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("/v1"))
    return fake


def openai_settings(fake: FakeOpenAI, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_api_key": OPENAI_KEY,
        "openai_base_url": fake.base_url,
        "upstream_timeout": 5.0,
        "upstream_retries": 2,
    }
    values.update(overrides)
    return make_settings(**values)


Proxy = Callable[..., Awaitable[Client]]


@pytest.fixture
def proxy(aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI) -> Proxy:
    """A factory: the real app, pointed at the fake OpenAI, with settings overrides."""

    async def start(**overrides: Any) -> Client:
        return await serve(aiohttp_client, openai_settings(fake_openai, **overrides))

    return start


class OAuthFake(Protocol):
    base: str

    def app(self) -> web.Application: ...


F = TypeVar("F", bound=OAuthFake)


async def started(aiohttp_server: AiohttpServer, fake: F) -> F:
    """A fake provider on its own test server, told the address it is reached at."""
    server = await aiohttp_server(fake.app())
    fake.base = str(server.make_url(""))
    return fake


@pytest.fixture
async def fake_gigachat(aiohttp_server: AiohttpServer) -> FakeGigaChat:
    return await started(aiohttp_server, FakeGigaChat())


@pytest.fixture
async def fake_ernie(aiohttp_server: AiohttpServer) -> FakeErnie:
    return await started(aiohttp_server, FakeErnie())


def gigachat_settings(fake: FakeGigaChat) -> dict[str, Any]:
    return {
        "gigachat_credentials": GIGACHAT_CREDENTIALS,
        "gigachat_scope": GIGACHAT_SCOPE,
        "gigachat_auth_url": f"{fake.base}/api/v2/oauth",
        "gigachat_base_url": f"{fake.base}/api/v1",
    }


def ernie_settings(fake: FakeErnie) -> dict[str, Any]:
    return {
        "ernie_api_key": ERNIE_API_KEY,
        "ernie_secret_key": ERNIE_SECRET_KEY,
        "ernie_auth_url": f"{fake.base}/oauth/2.0/token",
        "ernie_base_url": f"{fake.base}/rpc/2.0/ai_custom/v1/wenxinworkshop/chat",
    }


def proxy_factory(aiohttp_client: AiohttpClient, provider_settings: dict[str, Any]) -> Proxy:
    """A factory: the real app with one provider's settings, plus overrides."""

    async def start(**overrides: Any) -> Client:
        values = {**provider_settings, "upstream_timeout": 5.0, **overrides}
        return await serve(aiohttp_client, make_settings(**values))

    return start


@pytest.fixture
def giga_proxy(aiohttp_client: AiohttpClient, fake_gigachat: FakeGigaChat) -> Proxy:
    return proxy_factory(aiohttp_client, gigachat_settings(fake_gigachat))


@pytest.fixture
def ernie_proxy(aiohttp_client: AiohttpClient, fake_ernie: FakeErnie) -> Proxy:
    return proxy_factory(aiohttp_client, ernie_settings(fake_ernie))
