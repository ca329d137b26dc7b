"""GigaChat through chatproxy: OAuth done right, and its one-system-message rule."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest

from tests.conftest import Proxy
from tests.fakes.gigachat_server import CREDENTIALS as GIGACHAT_CREDENTIALS
from tests.fakes.gigachat_server import FakeGigaChat
from tests.sse_client import read_events

USER = {"role": "user", "content": "Привет!"}


async def test_reply_with_a_fresh_token(giga_proxy: Proxy, fake_gigachat: FakeGigaChat) -> None:
    client = await giga_proxy(gigachat_model="GigaChat-Pro")
    resp = await client.post("/gigachat/", json={"messages": [USER]})
    assert resp.status == 200
    body = await resp.json()
    assert body["messages"][-1] == {"role": "assistant", "content": "Привет от GigaChat"}
    assert body["usage"]["total_tokens"] == 22
    assert fake_gigachat.chats[0]["model"] == "GigaChat-Pro"
    assert fake_gigachat.token_requests == 1
    await client.post("/gigachat", json={"messages": [USER]})
    assert fake_gigachat.token_requests == 1, "the token is cached"


async def test_every_token_request_has_a_fresh_uuid4_rquid(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    client = await giga_proxy()
    await client.post("/gigachat/", json={"messages": [USER]})
    fake_gigachat.revoke_all()
    await client.post("/gigachat/", json={"messages": [USER]})
    assert len(fake_gigachat.rquids) == 2
    assert len(set(fake_gigachat.rquids)) == 2
    assert all(uuid.UUID(r).version == 4 for r in fake_gigachat.rquids)


async def test_fifty_concurrent_requests_on_a_cold_cache_fetch_one_token(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    fake_gigachat.token_delay = 0.2
    client = await giga_proxy()
    responses = await asyncio.gather(
        *(client.post("/gigachat/", json={"messages": [USER]}) for _ in range(50))
    )
    assert [r.status for r in responses] == [200] * 50
    assert fake_gigachat.token_requests == 1


async def test_expired_token_is_refreshed_once_and_the_request_retried(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    client = await giga_proxy()
    assert (await client.post("/gigachat/", json={"messages": [USER]})).status == 200
    fake_gigachat.revoke_all()  # the server forgets it before chatproxy expects
    resp = await client.post("/gigachat/", json={"messages": [USER]})
    assert resp.status == 200
    assert fake_gigachat.rejected_tokens == 1
    assert fake_gigachat.token_requests == 2


async def test_short_lived_tokens_are_renewed_before_they_expire(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    fake_gigachat.token_ttl = 6.0  # soft margin 1.2 s, hard margin 5 s
    client = await giga_proxy()
    assert (await client.post("/gigachat/", json={"messages": [USER]})).status == 200
    await asyncio.sleep(1.1)  # now within 5 s of expiry: a new token before use
    assert (await client.post("/gigachat/", json={"messages": [USER]})).status == 200
    assert fake_gigachat.token_requests == 2
    assert fake_gigachat.rejected_tokens == 0, "no request ever carried an expired token"


async def test_still_rejected_after_refresh_is_502(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    fake_gigachat.token_ttl = -10  # every token is born expired
    client = await giga_proxy()
    resp = await client.post("/gigachat/", json={"messages": [USER]})
    assert resp.status == 502
    assert fake_gigachat.token_requests == 2, "refreshed once, not in a loop"


async def test_bad_credentials_are_502_and_never_echoed(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    # base64 of wrong-client-7f3a:wrong-secret-9c21: parts no error message would contain.
    wrong = "d3JvbmctY2xpZW50LTdmM2E6d3Jvbmctc2VjcmV0LTljMjE="
    client = await giga_proxy(gigachat_credentials=wrong)
    resp = await client.post("/gigachat/", json={"messages": [USER]})
    assert resp.status == 502
    text = await resp.text()
    assert "rejected chatproxy's credentials" in text
    assert "credentials doesn't match" in text
    assert wrong not in text and GIGACHAT_CREDENTIALS not in text


async def test_bad_scope_is_a_credentials_error(giga_proxy: Proxy) -> None:
    client = await giga_proxy(gigachat_scope="GIGACHAT_API_CORP")
    resp = await client.post("/gigachat/", json={"messages": [USER]})
    assert resp.status == 502
    assert "scope" in (await resp.json())["error"]


async def test_token_endpoint_down_is_502(giga_proxy: Proxy, fake_gigachat: FakeGigaChat) -> None:
    fake_gigachat.token_status = 503
    client = await giga_proxy(upstream_retries=1)
    resp = await client.post("/gigachat/", json={"messages": [USER]})
    assert resp.status == 502
    assert fake_gigachat.token_requests == 2


async def test_token_endpoint_hanging_is_504(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    fake_gigachat.token_delay = 30
    client = await giga_proxy(upstream_timeout=0.4)
    resp = await client.post("/gigachat/", json={"messages": [USER]})
    assert resp.status == 504


async def test_system_messages_merge_into_one_first(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    client = await giga_proxy(system_prompt="Operator.", system_prompt_mode="always")
    messages = [
        {"role": "system", "content": "Client rules."},
        USER,
        {"role": "assistant", "content": "Здравствуйте"},
        {"role": "system", "content": "Late note."},
        {"role": "user", "content": "?"},
    ]
    resp = await client.post("/gigachat/", json={"messages": messages})
    assert resp.status == 200
    sent = fake_gigachat.chats[0]["messages"]
    assert sent[0] == {"role": "system", "content": "Operator.\n\nClient rules.\n\nLate note."}
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    body = await resp.json()
    assert body["messages"][:2] == [
        {"role": "system", "content": "Operator."},
        {"role": "system", "content": "Client rules."},
    ], "the client sees its own array, not the provider's adaptation"


async def test_temperature_zero_becomes_top_p_zero(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    client = await giga_proxy()
    resp = await client.post("/gigachat/", json={"messages": [USER], "temperature": 0})
    assert resp.status == 200
    assert fake_gigachat.chats[0]["top_p"] == 0 and "temperature" not in fake_gigachat.chats[0]


async def test_streaming(giga_proxy: Proxy) -> None:
    client = await giga_proxy()
    events = await read_events(
        await client.post("/gigachat/", json={"messages": [USER], "stream": True})
    )
    assert [e[1]["content"] for e in events if e[0] == "delta"] == ["При", "вет"]
    assert events[-1][1]["messages"][-1]["content"] == "Привет"


async def test_models_and_status_show_the_token(giga_proxy: Proxy) -> None:
    client = await giga_proxy()
    status = await (await client.get("/status")).json()
    assert status["providers"]["gigachat"]["token_held"] is False
    models = await (await client.get("/gigachat/models")).json()
    assert models["models"] == ["GigaChat", "GigaChat-Max", "GigaChat-Pro"]
    status = await (await client.get("/status")).json()
    gigachat = status["providers"]["gigachat"]
    assert gigachat["token_held"] is True
    assert 1790 < gigachat["token_expires_in_s"] <= 1800
    ids = [m["id"] for m in (await (await client.get("/v1/models")).json())["data"]]
    assert "gigachat/GigaChat-Pro" in ids


async def test_v1_routes_bare_model_names_to_the_provider_that_lists_them(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    client = await giga_proxy()
    resp = await client.post(
        "/v1/chat/completions", json={"model": "GigaChat-Max", "messages": [USER]}
    )
    assert resp.status == 200
    assert fake_gigachat.chats[0]["model"] == "GigaChat-Max"
    resp = await client.post(
        "/v1/chat/completions", json={"model": "gigachat/GigaChat-Pro", "messages": [USER]}
    )
    assert (await resp.json())["model"] == "gigachat/GigaChat-Pro"


async def test_missing_ca_bundle_turns_the_provider_off(giga_proxy: Proxy, tmp_path: Path) -> None:
    client = await giga_proxy(gigachat_ca_bundle=tmp_path / "missing.pem")
    resp = await client.post("/gigachat/", json={"messages": [USER]})
    assert resp.status == 503
    assert "GIGACHAT_CA_BUNDLE" in (await resp.json())["error"]


async def test_missing_credentials_names_the_variable(giga_proxy: Proxy) -> None:
    client = await giga_proxy(gigachat_credentials=None)
    resp = await client.post("/gigachat/", json={"messages": [USER]})
    assert resp.status == 503
    assert "GIGACHAT_CREDENTIALS" in (await resp.json())["error"]


async def test_verification_off_works_but_warns(
    giga_proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        client = await giga_proxy(gigachat_verify_ssl=False)
    assert any("NOT checked" in r.getMessage() for r in caplog.records)
    assert (await client.post("/gigachat/", json={"messages": [USER]})).status == 200


async def test_only_empty_system_text_is_a_400_not_an_empty_call(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    """Found by fuzzing: the client's empty system message keeps the operator's prompt
    out, and folding system texts left GigaChat nothing at all."""
    client = await giga_proxy()
    resp = await client.post("/gigachat/", json={"messages": [{"role": "system", "content": ""}]})
    assert resp.status == 400 and (await resp.json())["param"] == "messages"
    assert fake_gigachat.chats == []
