"""What an upstream's failures become: retries, 429s, timeouts, garbage, resets."""

from __future__ import annotations

import time

import pytest

from tests.conftest import Proxy
from tests.fakes.openai_server import FakeOpenAI, hang, raw, reply, reset, status

USER = {"role": "user", "content": "hi"}


async def test_retry_then_success(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(status(503), status(500))
    client = await proxy(upstream_retries=2)
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 200
    assert (await resp.json())["messages"][-1]["content"] == "Hello!"
    assert len(fake_openai.requests) == 3


async def test_retries_spent_is_502(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = status(503, {"error": {"message": "overloaded"}})
    client = await proxy(upstream_retries=2)
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 502
    error = await resp.json()
    assert "503" in error["error"] and "overloaded" in error["error"]
    assert len(fake_openai.requests) == 3


async def test_429_passes_retry_after_on(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = status(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"})
    client = await proxy(upstream_retries=1)
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "7"
    assert (await resp.json())["type"] == "rate_limit_exceeded"
    assert len(fake_openai.requests) == 2


async def test_long_retry_after_is_not_waited_out(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = status(429, headers={"Retry-After": "600"})
    client = await proxy(upstream_retries=3)
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 429 and resp.headers["Retry-After"] == "600"
    assert len(fake_openai.requests) == 1


@pytest.mark.parametrize("code", [400, 404, 422])
async def test_upstream_client_errors_are_400_with_its_message(
    proxy: Proxy, fake_openai: FakeOpenAI, code: int
) -> None:
    fake_openai.default = status(code, {"error": {"message": "model 'x' does not exist"}})
    client = await proxy()
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 400
    assert "model 'x' does not exist" in (await resp.json())["error"]
    assert len(fake_openai.requests) == 1, "a wrong request is not retried"


@pytest.mark.parametrize("code", [401, 403])
async def test_rejected_credentials_are_502(
    proxy: Proxy, fake_openai: FakeOpenAI, code: int
) -> None:
    fake_openai.default = status(code)
    client = await proxy()
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 502
    assert "rejected chatproxy's credentials" in (await resp.json())["error"]


async def test_hanging_upstream_is_504_within_the_timeout(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = hang()
    client = await proxy(upstream_timeout=0.5)
    started = time.monotonic()
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    elapsed = time.monotonic() - started
    assert resp.status == 504
    assert (await resp.json())["type"] == "upstream_timeout"
    assert 0.4 < elapsed < 1.5
    assert len(fake_openai.requests) == 1, "a request that used its total time is not retried"


@pytest.mark.parametrize(
    "body",
    [
        b"<html>oops</html>",
        b'{"choices": []}',
        b'{"foo": 1}',
        b'{"choices": [{"message": {"content": 5}}]}',
    ],
)
async def test_malformed_200_is_502(proxy: Proxy, fake_openai: FakeOpenAI, body: bytes) -> None:
    fake_openai.default = raw(body)
    client = await proxy()
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 502
    assert (await resp.json())["type"] == "upstream_bad_response"


async def test_connection_reset_is_retried(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(reset())
    client = await proxy()
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 200
    assert len(fake_openai.requests) == 2


async def test_resets_every_time_is_502(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = reset()
    client = await proxy(upstream_retries=1)
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 502
    assert (await resp.json())["type"] == "upstream_connection_error"


async def test_unreachable_upstream_is_502(proxy: Proxy) -> None:
    client = await proxy(openai_base_url="http://127.0.0.1:9/v1", upstream_retries=1)
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 502
    assert "could not reach chatgpt" in (await resp.json())["error"]


async def test_retry_reaches_the_same_answer_body(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(status(429, headers={"Retry-After": "0"}), reply("after the wait"))
    client = await proxy()
    body = await (await client.post("/chatgpt/", json={"messages": [USER]})).json()
    assert body["messages"][-1]["content"] == "after the wait"
