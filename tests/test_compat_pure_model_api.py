"""The pure Qwen/Llama model API's README replayed: `POST /chat {message, max_tokens,
temperature}`, `POST /reset`, `GET /status`, `GET /health`, on the history layer."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import Client, Proxy
from tests.fakes.openai_server import FakeOpenAI
from tests.history_stores import silent_port
from tests.test_compat_llama_log import SYSTEM, LocalProxy, local_proxy

__all__ = ["local_proxy", "silent_port"]  # fixtures, used by name
JSON = {"Content-Type": "application/json"}
# The README's curl body, as written.
README_CHAT_BODY = """{
    "message": "你好！",
    "max_tokens": 512,
    "temperature": 0.7
  }"""


async def post_chat(client: Client, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    resp = await client.post("/chat", json=body, **kwargs)
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def status(client: Client, **kwargs: Any) -> dict[str, Any]:
    resp = await client.get("/status", **kwargs)
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def test_the_readme_chat_reset_and_status(local_proxy: LocalProxy) -> None:
    client, local = await local_proxy()
    resp = await client.post("/chat", data=README_CHAT_BODY, headers=JSON)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"message": "你好！", "response": "答え 1", "status": "success"}
    assert local.requests[0].max_tokens == 512 and local.requests[0].temperature == 0.7

    await post_chat(client, {"message": "再見"})
    assert local.sent() == [
        ("system", SYSTEM),
        ("user", "你好！"),
        ("assistant", "答え 1"),
        ("user", "再見"),
    ]
    body = await status(client)
    assert {k: body[k] for k in ("model_name", "device", "conversation_length")} == {
        "model_name": "Qwen/Qwen2.5-7B-Instruct",
        "device": "cuda:0",
        "conversation_length": 4,
    }
    assert body["memory_allocated"] == 7516192768
    # chatproxy's own /status is all still there.
    assert body["providers"]["local"]["configured"] is True and "version" in body

    resp = await client.post("/reset")  # the README's curl: no body
    assert resp.status == 200
    assert (await resp.json())["status"] == "success"
    assert (await status(client))["conversation_length"] == 0
    await post_chat(client, {"message": "又見面了"})
    assert local.sent() == [("system", SYSTEM), ("user", "又見面了")]


async def test_the_older_servers_defaults_apply(local_proxy: LocalProxy) -> None:
    client, local = await local_proxy()
    await post_chat(client, {"message": "hi"})
    assert (local.requests[-1].max_tokens, local.requests[-1].temperature) == (512, 0.7)
    await post_chat(client, {"message": "hi", "max_tokens": 64, "temperature": 0.1})
    assert (local.requests[-1].max_tokens, local.requests[-1].temperature) == (64, 0.1)


async def test_health_and_errors(local_proxy: LocalProxy) -> None:
    client, local = await local_proxy()
    assert await (await client.get("/health")).json() == {"status": "ok"}
    for body in (
        {"message": ""},
        {"message": "x", "max_tokens": 0},
        {"message": "x", "temperature": 5},
    ):
        resp = await client.post("/chat", json=body)
        assert resp.status == 400
        assert isinstance((await resp.json())["error"], str)
    assert not local.requests


async def test_without_the_history_layer(local_proxy: LocalProxy) -> None:
    client, local = await local_proxy(history_store=None)
    for resp in (
        await client.post("/chat", data=README_CHAT_BODY, headers=JSON),
        await client.post("/reset"),
    ):
        assert resp.status == 503 and "HISTORY_STORE" in (await resp.json())["error"]
    body = await status(client)
    assert body["conversation_length"] == 0 and body["model_name"] == "Qwen/Qwen2.5-7B-Instruct"
    assert not local.requests


async def test_one_conversation_per_key(local_proxy: LocalProxy) -> None:
    client, local = await local_proxy(proxy_api_keys="key-one-123,key-two-456")
    one = {"Authorization": "Bearer key-one-123"}
    two = {"Authorization": "Bearer key-two-456"}
    await post_chat(client, {"message": "one's"}, headers=one)
    await post_chat(client, {"message": "two's"}, headers=two)
    assert local.sent() == [("system", SYSTEM), ("user", "two's")]
    await client.post("/reset", headers=two)
    assert (await status(client, headers=one))["conversation_length"] == 2
    assert (await status(client, headers=two))["conversation_length"] == 0


async def test_compat_provider_sends_it_elsewhere(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy(history_store="memory://", compat_provider="chatgpt")
    answer = await post_chat(client, {"message": "你好！"})
    assert answer == {"message": "你好！", "response": "Hello!", "status": "success"}
    sent = fake_openai.requests[-1]
    assert sent["max_tokens"] == 512 and sent["temperature"] == 0.7
    body = await status(client)
    assert body["model_name"] == "gpt-4o-mini" and body["device"] is None
    assert body["conversation_length"] == 2


async def test_status_answers_quickly_when_the_store_hangs(
    local_proxy: LocalProxy, silent_port: int
) -> None:
    store = f"redis://127.0.0.1:{silent_port}"
    client, _ = await local_proxy(history_store=store, history_timeout=2)
    started = time.monotonic()
    body = await status(client)
    assert time.monotonic() - started < 1.8, "/status waits a second, not HISTORY_TIMEOUT"
    assert body["conversation_length"] is None and body["model_name"] == "Qwen/Qwen2.5-7B-Instruct"
