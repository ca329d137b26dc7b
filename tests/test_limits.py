"""Per-client request and token budgets, per-provider concurrency caps, and Redis-shared
counters: 429s in both error envelopes, with Retry-After and OpenAI's x-ratelimit-* headers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from aiohttp import web

from tests.conftest import AiohttpClient, AiohttpServer, Client, Proxy, openai_settings, serve
from tests.fakes.embeddings import EmbeddingOpenAI
from tests.fakes.openai_server import Behaviour, FakeOpenAI, chunk, completion_body, stream
from tests.history_stores import REDIS

HELLO = {"messages": [{"role": "user", "content": "hi"}]}
V1_HELLO = {"model": "chatgpt/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def native(client: Client, key: str | None = None, **extra: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await client.post("/chatgpt/", json={**HELLO, **extra}, headers=headers)


async def v1(client: Client, key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await client.post("/v1/chat/completions", json=V1_HELLO, headers=headers)


def assert_refused(response: Any) -> None:
    assert response.status == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60


async def test_requests_per_minute_counts_both_surfaces_per_address(proxy: Proxy) -> None:
    client = await proxy(rate_limit_rpm=2)
    first = await native(client)
    assert first.status == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" not in first.headers  # RATE_LIMIT_TPM is off
    second = await v1(client)
    assert second.status == 200
    assert second.headers["x-ratelimit-remaining-requests"] == "0"

    refused = await native(client)
    assert_refused(refused)
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    body = await refused.json()
    assert body["type"] == "rate_limit_exceeded"
    assert "2 requests per minute" in body["error"]
    assert "client address" in body["error"]

    refused_v1 = await v1(client)
    assert_refused(refused_v1)
    envelope = await refused_v1.json()
    assert envelope["error"]["code"] == "rate_limit_exceeded"
    assert envelope["error"]["type"] == "rate_limit_exceeded"


async def test_each_key_has_its_own_budget(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy(rate_limit_rpm=1, proxy_api_keys="limit-key-one,limit-key-two")
    assert (await native(client, "limit-key-one")).status == 200
    refused = await native(client, "limit-key-one")
    assert_refused(refused)
    assert "for this key" in (await refused.json())["error"]
    assert (await native(client, "limit-key-two")).status == 200
    assert len(fake_openai.requests) == 2  # a refused request never reaches the provider


async def test_health_and_ready_are_not_limited(proxy: Proxy) -> None:
    client = await proxy(rate_limit_rpm=1)
    for _ in range(3):
        health = await client.get("/health")
        assert health.status == 200
        assert "x-ratelimit-limit-requests" not in health.headers
    assert (await client.get("/ready")).status == 200


async def test_tokens_per_minute_refuses_once_usage_is_over_budget(proxy: Proxy) -> None:
    client = await proxy(rate_limit_tpm=15)  # each fake answer reports 10 tokens
    first = await native(client)
    assert first.status == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "15"
    assert first.headers["x-ratelimit-remaining-tokens"] == "15"  # as admitted
    second = await v1(client)
    assert second.status == 200
    assert second.headers["x-ratelimit-remaining-tokens"] == "5"
    refused = await native(client)  # 20 of 15 spent
    assert_refused(refused)
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.headers["x-ratelimit-reset-tokens"].endswith("s")
    assert "15 tokens per minute" in (await refused.json())["error"]


async def test_a_stream_is_charged_the_usage_it_reports(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy(rate_limit_tpm=7, rate_limit_rpm=100)
    fake_openai.queue(stream(["a", "b"]))  # usage: 5 + 2 tokens
    streamed = await native(client, stream=True)
    assert streamed.status == 200
    assert streamed.headers["x-ratelimit-remaining-requests"] == "99"
    assert streamed.headers["x-ratelimit-remaining-tokens"] == "7"
    assert "event: done" in await streamed.text()
    assert_refused(await native(client, stream=True))


def gated(release: asyncio.Event, *, streaming: bool = False) -> Behaviour:
    """An answer held back until `release` is set: a slow upstream."""

    async def behave(request: web.Request) -> web.StreamResponse:
        if not streaming:
            await release.wait()
            return web.json_response(completion_body("slow"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n')
        await release.wait()
        await response.write(
            b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
        )
        return response

    return behave


@pytest.mark.parametrize("streaming", [False, True])
async def test_concurrency_cap_refuses_at_once_until_a_call_ends(
    proxy: Proxy, fake_openai: FakeOpenAI, streaming: bool
) -> None:
    client = await proxy(chatgpt_max_concurrency=1)
    release = asyncio.Event()
    fake_openai.queue(gated(release, streaming=streaming))
    first = asyncio.ensure_future(native(client, stream=streaming))
    await asyncio.wait_for(fake_openai.received.wait(), 5)
    if streaming:  # the stream is under way, and counts until it ends
        response = await asyncio.wait_for(first, 5)
        assert response.status == 200
        assert (await response.content.readuntil(b"\n\n")).startswith(b"event: delta")

    refused = await asyncio.wait_for(native(client), 2)  # no queueing: refused at once
    assert_refused(refused)
    assert "limit of 1 requests at once" in (await refused.json())["error"]
    refused_v1 = await v1(client)
    assert (await refused_v1.json())["error"]["code"] == "rate_limit_exceeded"
    assert len(fake_openai.requests) == 1

    release.set()
    done = await asyncio.wait_for(first, 5) if not streaming else response
    assert done.status == 200
    await done.read()
    status = await (await client.get("/status")).json()
    assert status["providers"]["chatgpt"]["in_flight"] == 0
    assert (await native(client)).status == 200


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_client_that_leaves_gives_its_place_back(
    proxy: Proxy, fake_openai: FakeOpenAI, streaming: bool
) -> None:
    """A client gone mid-call (before the answer, or mid-stream) must not hold the provider's
    only place for good: the count goes back down and the next request is served."""
    client = await proxy(chatgpt_max_concurrency=1)
    fake_openai.queue(gated(asyncio.Event(), streaming=streaming))  # never released
    first = asyncio.ensure_future(native(client, stream=streaming))
    await asyncio.wait_for(fake_openai.received.wait(), 5)
    if streaming:
        response = await asyncio.wait_for(first, 5)
        assert (await response.content.readuntil(b"\n\n")).startswith(b"event: delta")
        response.close()  # drops the connection mid-stream
    else:
        first.cancel()
    in_flight = -1
    for _ in range(100):
        status = await (await client.get("/status")).json()
        in_flight = status["providers"]["chatgpt"]["in_flight"]
        if in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert in_flight == 0
    assert (await native(client)).status == 200


async def test_a_failing_store_lets_requests_through(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 1: every command fails, and the limiter must not take chatproxy down.
    client = await proxy(rate_limit_rpm=1, rate_limit_store="redis://127.0.0.1:1/0")
    for _ in range(2):
        answer = await native(client)
        assert answer.status == 200
        assert "x-ratelimit-limit-requests" not in answer.headers
    assert "RATE_LIMIT_STORE failed" in caplog.text


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own in the shared Redis; its keys are deleted after."""
    prefix = f"chatproxy-test-{uuid.uuid4().hex}"
    yield prefix
    connection = redis.asyncio.Redis.from_url(REDIS)
    try:
        keys = [key async for key in connection.scan_iter(f"{prefix}*")]
        if keys:
            await connection.delete(*keys)
    finally:
        await connection.aclose()


async def test_two_copies_share_budgets_through_redis(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI, redis_prefix: str
) -> None:
    shared = {
        "rate_limit_rpm": 3,
        "rate_limit_tpm": 100,
        "rate_limit_store": f"{REDIS}?key_prefix={redis_prefix}",
        "proxy_api_keys": "shared-key-123",
    }
    one = await serve(aiohttp_client, openai_settings(fake_openai, **shared))
    two = await serve(aiohttp_client, openai_settings(fake_openai, **shared))
    assert (await native(one, "shared-key-123")).status == 200
    answer = await v1(two, "shared-key-123")
    assert answer.status == 200
    assert answer.headers["x-ratelimit-remaining-requests"] == "1"
    assert answer.headers["x-ratelimit-remaining-tokens"] == "90"  # the first answer's 10
    assert (await native(one, "shared-key-123")).status == 200
    assert_refused(await native(two, "shared-key-123"))
    assert_refused(await v1(one, "shared-key-123"))


async def test_an_ipv6_client_cannot_dodge_its_budget_by_changing_address(proxy: Proxy) -> None:
    """One IPv6 client holds a whole /64 (privacy addresses change by the hour; any host can
    pick any of 2**64): counted per address, each new one would bring a fresh budget."""
    client = await proxy(rate_limit_rpm=1, trusted_proxies="127.0.0.1")

    async def from_address(address: str) -> Any:
        headers = {"X-Forwarded-For": address}
        return await client.post("/chatgpt/", json=HELLO, headers=headers)

    assert (await from_address("2001:db8:1:2::1")).status == 200
    assert_refused(await from_address("2001:db8:1:2:ffff:1234:5678:9abc"))
    assert (await from_address("2001:db8:1:3::1")).status == 200  # another /64, another client
    assert (await from_address("203.0.113.7")).status == 200
    assert_refused(await from_address("::ffff:203.0.113.7"))  # the same IPv4 client


def usage_then_silence() -> Behaviour:
    """A stream that has sent its text and its usage (7 tokens), then goes quiet."""

    async def behave(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        for event in (chunk("a"), chunk("b"), chunk(finish="stop"), chunk(usage=usage)):
            await response.write(f"data: {event}\n\n".encode())
        await asyncio.sleep(3600)
        return response

    return behave


async def test_a_client_that_leaves_a_stream_is_still_charged_its_tokens(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    """The usage had come: leaving before the stream's last event must not make the tokens
    free (else a client dodges RATE_LIMIT_TPM by closing each stream early)."""
    client = await proxy(rate_limit_tpm=7, rate_limit_rpm=100)
    fake_openai.queue(usage_then_silence())
    response = await native(client, stream=True)
    assert (await response.content.readuntil(b"\n\n")).startswith(b"event: delta")
    await asyncio.sleep(0.1)  # the usage event reaches chatproxy
    response.close()
    for _ in range(100):
        status = await (await client.get("/status")).json()
        if status["providers"]["chatgpt"]["in_flight"] == 0:
            break
        await asyncio.sleep(0.02)
    assert_refused(await native(client))


async def test_embeddings_spend_the_same_budgets(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    """Every route that costs an upstream call is budgeted, not only the chat ones."""
    fake = EmbeddingOpenAI()
    fake.base_url = str((await aiohttp_server(fake.app())).make_url("/v1"))
    client = await serve(aiohttp_client, openai_settings(fake, rate_limit_rpm=1))
    body = {"model": "chatgpt/text-embedding-3-small", "input": "hello"}
    assert (await client.post("/v1/embeddings", json=body)).status == 200
    assert_refused(await client.post("/v1/embeddings", json=body))
