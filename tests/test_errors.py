"""Every row of DESIGN.md's error table, as JSON with the right status."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator

import pytest

from chatproxy.logs import setup_logging
from chatproxy.redact import Redactor
from tests.conftest import OPENAI_KEY, Proxy
from tests.fakes.openai_server import FakeOpenAI

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"", None, "empty"),
        (b"[]", None, "request body"),
        (b'{"messages": []}', "messages", "at least 1"),
        (b'{"model": "x"}', "messages", "Field required"),
        (b'{"messages": [{"role": "robot", "content": "x"}]}', "messages.0.role", "system"),
        (b'{"messages": [{"role": "user", "content": 5}]}', "messages.0.content", "string"),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": 3}', "temperature", "2"),
        (b'{"messages": [{"role": "user", "content": "x"}], "top_p": 0}', "top_p", "0"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens", "1"),
        (b'{"messages": [{"role": "user", "content": "x"}], "model": "a b"}', "model", "pattern"),
        (
            b'{"messages": [{"role": "user", "content": "x"}], "model": "' + b"m" * 129 + b'"}',
            "model",
            "128",
        ),
    ],
)
async def test_bad_requests_name_the_field(
    proxy: Proxy, fake_openai: FakeOpenAI, body: bytes, param: str | None, fragment: str
) -> None:
    client = await proxy()
    resp = await client.post("/chatgpt/", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    error = await resp.json()
    assert error["type"] == "invalid_request_error"
    assert error.get("param") == param
    assert fragment in error["error"]
    assert not fake_openai.requests, "nothing invalid reaches the upstream"


async def test_too_many_messages(proxy: Proxy) -> None:
    client = await proxy(max_messages=3)
    resp = await client.post("/chatgpt/", json={"messages": [USER] * 4})
    assert resp.status == 400
    assert "at most 3 messages" in (await resp.json())["error"]


async def test_unknown_provider_and_route(proxy: Proxy) -> None:
    client = await proxy()
    resp = await client.post("/bard/", json={"messages": [USER]})
    assert resp.status == 404
    assert "unknown provider 'bard'" in (await resp.json())["error"]
    resp = await client.get("/no/such/route")
    assert resp.status == 404
    assert (await resp.json())["type"] == "not_found"
    resp = await client.get("/nope")
    assert resp.status == 404
    resp = await client.get("/chatgpt/")
    assert resp.status == 405
    assert "use POST" in (await resp.json())["error"]


async def test_body_over_limit_is_refused_by_content_length(proxy: Proxy) -> None:
    client = await proxy(max_body_bytes=2048)
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    resp = await client.post("/chatgpt/", json=big)
    assert resp.status == 413
    assert (await resp.json())["type"] == "payload_too_large"


async def test_chunked_body_over_limit_is_cut_off(proxy: Proxy) -> None:
    client = await proxy(max_body_bytes=2048)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}]}'

    resp = await client.post(
        "/chatgpt/", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert "2048" in (await resp.json())["error"]


async def test_missing_credentials_is_503_naming_the_variable(proxy: Proxy) -> None:
    client = await proxy(openai_api_key=None, openai_base_url="https://api.openai.com/v1")
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 503
    assert "OPENAI_API_KEY" in (await resp.json())["error"]
    assert (await client.get("/health")).status == 200
    resp = await client.post("/gigachat/", json={"messages": [USER]})
    assert resp.status == 503


async def test_proxy_api_keys(proxy: Proxy) -> None:
    client = await proxy(proxy_api_keys="key-one, key-two")
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 401
    assert (await resp.json())["type"] == "authentication_error"
    resp = await client.post(
        "/chatgpt/", json={"messages": [USER]}, headers={"Authorization": "Bearer wrong"}
    )
    assert resp.status == 401
    resp = await client.post(
        "/chatgpt/", json={"messages": [USER]}, headers={"Authorization": "Bearer key-two"}
    )
    assert resp.status == 200
    assert (await client.get("/health")).status == 200
    assert (await client.get("/ready")).status == 200
    assert (await client.get("/status")).status == 401


async def test_unexpected_bug_is_a_json_500_without_traceback(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await proxy()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("chatproxy.pipeline.apply_system_prompt", broken)
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 500
    text = await resp.text()
    assert "secret internals" not in text and "Traceback" not in text
    assert (await resp.json())["type"] == "internal_error"


async def test_a_bug_is_a_500_in_json_with_its_traceback_in_the_log_scrubbed(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatproxy.clients.openai import OpenAIClient

    async def broken(self: OpenAIClient, request: object) -> None:
        raise RuntimeError(f"boom near {OPENAI_KEY}")

    monkeypatch.setattr(OpenAIClient, "complete", broken)
    stream = io.StringIO()
    handler = setup_logging("INFO", "text", Redactor([OPENAI_KEY]), stream)
    try:
        client = await proxy()
        resp = await client.post("/chatgpt/", json={"messages": [USER]})
    finally:
        logging.getLogger().removeHandler(handler)
    assert resp.status == 500
    assert resp.headers["Content-Type"].startswith("application/json")
    error = await resp.json()
    assert error["type"] == "internal_error" and "server log" in error["error"]
    assert error["request_id"] == resp.headers["X-Request-ID"]
    log = stream.getvalue()
    assert "unhandled error on POST /chatgpt/" in log and "RuntimeError: boom near ***" in log
    assert OPENAI_KEY not in log and OPENAI_KEY not in await resp.text()
    assert "POST /chatgpt/ 500 " in log
