"""The token cache on its own: single flight, early refresh, failures, invalidation."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from chatproxy.clients.auth import TokenCache
from chatproxy.errors import UpstreamAuthError, UpstreamConnectionError
from chatproxy.logs import setup_logging
from chatproxy.redact import Redactor
from tests.conftest import Proxy
from tests.fakes.ernie_server import SECRET_KEY as ERNIE_SECRET_KEY
from tests.fakes.ernie_server import FakeErnie
from tests.fakes.gigachat_server import CREDENTIALS as GIGACHAT_CREDENTIALS
from tests.fakes.gigachat_server import FakeGigaChat


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def cache_with(
    fetch_results: list[tuple[str, float] | Exception], clock: Clock, delay: float = 0.0
) -> tuple[TokenCache, list[int]]:
    calls: list[int] = []

    async def fetch() -> tuple[str, float]:
        calls.append(1)
        await asyncio.sleep(delay)
        result = fetch_results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    return TokenCache(fetch, provider="test", redactor=Redactor(), clock=clock), calls


async def test_concurrent_callers_share_one_fetch() -> None:
    clock = Clock()
    cache, calls = cache_with([("t1", clock.now + 1800)], clock, delay=0.05)
    tokens = await asyncio.gather(*(cache.get() for _ in range(50)))
    assert set(tokens) == {"t1"}
    assert len(calls) == 1


async def test_refresh_starts_early_in_the_background() -> None:
    clock = Clock()
    cache, calls = cache_with([("t1", clock.now + 1800), ("t2", clock.now + 3600)], clock)
    assert await cache.get() == "t1"
    clock.now += 1700  # 100 s left: inside the 120 s soft margin, well before expiry
    assert await cache.get() == "t1", "the old token is still served while the new one comes"
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(calls) == 2
    assert await cache.get() == "t2"
    assert cache.status() == {"token_held": True, "token_expires_in_s": 1900.0}


async def test_a_failed_fetch_reaches_every_waiter_and_the_next_call_tries_again() -> None:
    clock = Clock()
    cache, calls = cache_with(
        [UpstreamConnectionError("down"), ("t2", clock.now + 60)], clock, delay=0.01
    )
    results = await asyncio.gather(*(cache.get() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, UpstreamConnectionError) for r in results)
    assert len(calls) == 1
    assert await cache.get() == "t2"


async def test_rejected_credentials_become_a_clear_auth_error() -> None:
    clock = Clock()
    rejection = UpstreamAuthError("x", upstream_status=401, upstream_message="bad client")
    cache, _ = cache_with([rejection], clock)
    with pytest.raises(UpstreamAuthError, match=r"when asked for a token \(HTTP 401\): bad client"):
        await cache.get()


async def test_invalidate_ignores_a_token_already_replaced() -> None:
    clock = Clock()
    cache, calls = cache_with([("t1", clock.now + 1800), ("t2", clock.now + 1800)], clock)
    await cache.get()
    cache.invalidate("some-older-token")
    assert await cache.get() == "t1"
    cache.invalidate("t1")
    assert await cache.get() == "t2"
    assert len(calls) == 2


async def test_new_tokens_are_scrubbed_from_logs() -> None:
    clock = Clock()
    redactor = Redactor()
    cache = TokenCache(
        lambda: _token("tok-VALUE-123", clock.now + 60),
        provider="t",
        redactor=redactor,
        clock=clock,
    )
    await cache.get()
    assert redactor("sent tok-VALUE-123") == "sent ***"


async def _token(value: str, expires: float) -> tuple[str, float]:
    return value, expires


async def test_no_credential_or_token_reaches_the_log(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat, ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    stream = io.StringIO()
    handler = setup_logging(
        "DEBUG", "text", Redactor([GIGACHAT_CREDENTIALS, ERNIE_SECRET_KEY]), stream
    )
    try:
        giga = await giga_proxy(upstream_retries=1)
        ernie = await ernie_proxy(upstream_retries=1)
        await giga.post("/gigachat/", json={"messages": [{"role": "user", "content": "hi"}]})
        fake_gigachat.revoke_all()
        await giga.post("/gigachat/", json={"messages": [{"role": "user", "content": "hi"}]})
        await ernie.post("/ernie/", json={"messages": [{"role": "user", "content": "hi"}]})
        fake_ernie.tokens.clear()
        await ernie.post("/ernie/", json={"messages": [{"role": "user", "content": "hi"}]})
        fake_gigachat.token_status = 500
        fake_gigachat.revoke_all()
        await giga.post("/gigachat/", json={"messages": [{"role": "user", "content": "hi"}]})
    finally:
        logging.getLogger().removeHandler(handler)
    logged = stream.getvalue()
    assert "rejected its access token" in logged and "retry 1 of 1" in logged
    secrets = [GIGACHAT_CREDENTIALS, ERNIE_SECRET_KEY, *fake_gigachat.issued, *fake_ernie.issued]
    assert len(fake_gigachat.issued) >= 2 and len(fake_ernie.issued) == 2
    assert fake_ernie.token_urls and ERNIE_SECRET_KEY in fake_ernie.token_urls[0]
    for secret in secrets:
        assert secret not in logged
