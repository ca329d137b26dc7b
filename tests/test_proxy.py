"""Forward proxies: UPSTREAM_PROXY, or the environment's proxy variables read once.

conftest clears the proxy variables before every test; these set what they need."""

from __future__ import annotations

import io
import logging
from typing import Any

import aiohttp
import pytest

from chatproxy.clients.http import Timeouts, Upstream
from chatproxy.clients.proxy import ProxyRules
from chatproxy.errors import UpstreamConnectionError
from chatproxy.logs import setup_logging
from chatproxy.redact import Redactor
from tests.conftest import AiohttpClient, make_settings, serve
from tests.fakes.openai_server import FakeOpenAI

USER = {"role": "user", "content": "hi"}


def test_environment_rules_pick_by_scheme_and_honour_no_proxy() -> None:
    rules = ProxyRules(
        environment={
            "https": "http://secure-proxy:3128",
            "http": "plain-proxy:8080",  # no scheme: http, as curl reads it
            "no": "localhost,.internal.example,10.0.0.5:8443",
        }
    )
    assert rules.active
    assert rules.for_url("https://api.openai.com/v1") == "http://secure-proxy:3128"
    assert rules.for_url("http://vllm:8000/v1") == "http://plain-proxy:8080"
    assert rules.for_url("http://localhost:8000/v1") is None
    assert rules.for_url("https://llm.internal.example/v1") is None
    assert rules.for_url("https://10.0.0.5:8443/v1") is None
    assert rules.for_url("https://10.0.0.5:9443/v1") == "http://secure-proxy:3128"


def test_all_proxy_is_the_fallback_and_star_bypasses_everything() -> None:
    assert ProxyRules(environment={"all": "http://p:1"}).for_url("https://x/v1") == "http://p:1"
    rules = ProxyRules(environment={"all": "http://p:1", "no": "*"})
    assert rules.for_url("https://x/v1") is None


def test_no_proxy_configured_is_inactive() -> None:
    rules = ProxyRules(environment={"no": "localhost"})
    assert not rules.active
    assert rules.for_url("https://api.openai.com/v1") is None


def test_socks_proxies_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        rules = ProxyRules(environment={"https": "socks5://127.0.0.1:1080"})
    assert not rules.active
    assert "https_proxy is ignored" in caplog.text


def test_upstream_proxy_wins_over_the_environment_and_yields_its_password() -> None:
    rules = ProxyRules("http://user:pa55word@corp:3128", environment={"https": "http://other:1"})
    assert rules.for_url("https://gigachat.devices.sberbank.ru/api/v1") == (
        "http://user:pa55word@corp:3128"
    )
    assert rules.passwords() == ["pa55word"]
    assert ProxyRules(environment={"https": "http://u:envpass@p:1"}).passwords() == ["envpass"]


def test_upstream_proxy_must_be_an_http_url() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        make_settings(upstream_proxy="socks5://127.0.0.1:1080")


async def test_calls_go_through_the_environment_proxy(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake answers absolute-form requests, as a forward proxy receives them; the upstream
    # host does not exist, so only the proxy can have carried the call.
    monkeypatch.setenv("HTTP_PROXY", fake_openai.base_url.removesuffix("/v1"))
    settings = make_settings(openai_api_key="sk-test", openai_base_url="http://upstream.invalid/v1")
    client = await serve(aiohttp_client, settings)
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 200, await resp.text()
    assert fake_openai.headers[0]["Host"] == "upstream.invalid"
    status = await (await client.get("/status")).json()
    assert status["providers"]["chatgpt"]["proxy"] == fake_openai.base_url.removesuffix("/v1")


async def test_no_proxy_hosts_are_reached_directly(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    settings = make_settings(openai_api_key="sk-test", openai_base_url=fake_openai.base_url)
    client = await serve(aiohttp_client, settings)
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 200
    assert "proxy" not in (await (await client.get("/status")).json())["providers"]["chatgpt"]


async def test_proxy_credentials_are_sent_and_never_shown(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    stream = io.StringIO()
    proxy_url = fake_openai.base_url.replace("http://", "http://corp:pr0xy-pa55@").removesuffix(
        "/v1"
    )
    settings = make_settings(
        openai_api_key="sk-test",
        openai_base_url="http://upstream.invalid/v1",
        upstream_proxy=proxy_url,
    )
    handler = setup_logging("DEBUG", "text", Redactor(settings.secrets()), stream)
    try:
        client = await serve(aiohttp_client, settings)
        resp = await client.post("/chatgpt/", json={"messages": [USER]})
        status_text = await (await client.get("/status")).text()
    finally:
        logging.getLogger().removeHandler(handler)
    assert resp.status == 200
    assert fake_openai.headers[0]["Proxy-Authorization"].startswith("Basic ")
    for shown in (status_text, stream.getvalue(), repr(settings)):
        assert "pr0xy-pa55" not in shown
    assert "upstream calls go through the proxy http://127.0.0.1:" in stream.getvalue()


async def test_a_proxy_that_refuses_is_a_502_that_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with aiohttp.ClientSession() as session:
        upstream = Upstream(
            session,
            provider="chatgpt",
            timeouts=Timeouts(total=5, retries=0),
            redactor=Redactor(),
            proxies=ProxyRules("http://corp:3128"),
        )

        def refuse(*args: Any, **kwargs: Any) -> Any:
            assert kwargs["proxy"] == "http://corp:3128"
            raise aiohttp.ClientHttpProxyError(
                None,  # type: ignore[arg-type]
                (),
                status=407,
                message="Proxy Authentication Required",
            )

        monkeypatch.setattr(session, "request", refuse)
        with pytest.raises(UpstreamConnectionError) as caught:
            await upstream.call_json("POST", "https://api.openai.com/v1/chat/completions", json={})
    assert caught.value.status == 502
    assert "proxy refused" in caught.value.message and "407" in caught.value.message
