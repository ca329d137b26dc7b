"""The Llama3.5 Chat API's README replayed: `POST /chat {prompt, conversation_id}` and
`GET /log?conversation_id=`, with integer ids, on the history layer."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chatproxy.clients.base import Capabilities, Completion, CompletionRequest, Delta
from chatproxy.keys import PROVIDERS
from chatproxy.schemas import Usage
from tests.conftest import AiohttpClient, Client, Proxy, make_settings, serve
from tests.fakes.openai_server import FakeOpenAI

SYSTEM = "You are a helpful assistant. Answer clearly and concisely."
JSON = {"Content-Type": "application/json"}
# The README's curl lines, as written (host and port are the test server's).
README_CHAT_BODY = '{"prompt": "こんにちは"}'
README_LOG_PATH = "/log?conversation_id=1234567890"


@dataclass
class StubLocal:
    """The `local` provider's place, as the older server ran its model in process: answers
    "答え <n>" and records every request (a stub: the tiny real model is slow)."""

    name: str = "local"
    default_model: str = "Qwen/Qwen2.5-7B-Instruct"
    capabilities: Capabilities = field(default_factory=Capabilities)
    requests: list[CompletionRequest] = field(default_factory=list)

    async def complete(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        return Completion(f"答え {len(self.requests)}", request.model, Usage(1, 1, 2))

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Delta, None]:
        completion = await self.complete(request)
        yield Delta(completion.content, finish_reason="stop")

    async def models(self) -> list[str]:
        return [self.default_model]

    def not_ready_reason(self) -> str | None:
        return None

    def status(self) -> dict[str, Any]:
        return {"model": self.default_model, "device": "cuda:0", "memory_allocated": 7516192768}

    async def close(self) -> None:
        return None

    def sent(self, index: int = -1) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in self.requests[index].messages]


LocalProxy = Callable[..., Awaitable[tuple[Client, StubLocal]]]


@pytest.fixture
def local_proxy(aiohttp_client: AiohttpClient, tmp_path: Path) -> LocalProxy:
    """The real app, its `local` provider the stub; history on (memory) unless overridden."""

    async def start(**overrides: Any) -> tuple[Client, StubLocal]:
        values: dict[str, Any] = {"history_store": "memory://", **overrides}
        client = await serve(aiohttp_client, make_settings(**values))
        stub = StubLocal()
        client.app[PROVIDERS].add(stub)
        return client, stub

    return start


async def post_chat(client: Client, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    resp = await client.post("/chat", json=body, **kwargs)
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_the_readme_chat_then_log(
    local_proxy: LocalProxy, tmp_path: Path, store: str
) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path}/history.db"
    client, local = await local_proxy(history_store=url)
    resp = await client.post("/chat", data=README_CHAT_BODY, headers=JSON)
    assert resp.status == 200, await resp.text()
    first = await resp.json()
    assert set(first) == {"conversation_id", "response"}
    number = first["conversation_id"]
    assert isinstance(number, int) and 0 < number < 2**53
    assert first["response"] == "答え 1"

    second = await post_chat(client, {"conversation_id": number, "prompt": "お元気ですか"})
    assert second == {"conversation_id": number, "response": "答え 2"}
    # The model got the conversation so far, as the older server's full_prompt carried it.
    assert local.sent() == [
        ("system", SYSTEM),
        ("user", "こんにちは"),
        ("assistant", "答え 1"),
        ("user", "お元気ですか"),
    ]

    resp = await client.get(f"/log?conversation_id={number}")
    assert resp.status == 200
    assert await resp.json() == {
        "conversation_id": number,
        "log": ["あなた: こんにちは", "モデル: 答え 1", "あなた: お元気ですか", "モデル: 答え 2"],
    }


async def test_the_readme_log_line_reads_an_id_the_client_chose(
    local_proxy: LocalProxy,
) -> None:
    client, _ = await local_proxy()
    await post_chat(client, {"conversation_id": 1234567890, "prompt": "こんにちは"})
    resp = await client.get(README_LOG_PATH)
    assert await resp.json() == {
        "conversation_id": 1234567890,
        "log": ["あなた: こんにちは", "モデル: 答え 1"],
    }
    # The same conversation, through chatproxy's own history route.
    native = await (await client.get("/history/log:1234567890")).json()
    assert [m["content"] for m in native["messages"]] == ["こんにちは", "答え 1"]
    assert native["model"] == "local/Qwen/Qwen2.5-7B-Instruct"


async def test_new_conversations_get_distinct_ids(local_proxy: LocalProxy) -> None:
    client, local = await local_proxy()
    one = await post_chat(client, {"prompt": "a"})
    two = await post_chat(client, {"prompt": "b"})
    assert one["conversation_id"] != two["conversation_id"]
    assert local.sent() == [("system", SYSTEM), ("user", "b")], "a new id starts afresh"


async def test_errors_keep_the_error_field(local_proxy: LocalProxy) -> None:
    client, _ = await local_proxy()
    for body in ({"prompt": ""}, {"conversation_id": "abc", "prompt": "x"}):
        resp = await client.post("/chat", json=body)
        assert resp.status == 400
        assert isinstance((await resp.json())["error"], str)
    resp = await client.get("/log?conversation_id=42")
    assert resp.status == 404
    assert (await resp.json())["error"] == "no conversation 42"
    resp = await client.get("/log")
    assert resp.status == 400 and "conversation_id" in (await resp.json())["error"]
    resp = await client.get("/log?conversation_id=x")
    assert resp.status == 400


async def test_without_the_history_layer_it_says_to_set_history_store(
    local_proxy: LocalProxy,
) -> None:
    client, local = await local_proxy(history_store=None)
    resp = await client.post("/chat", data=README_CHAT_BODY, headers=JSON)
    assert resp.status == 503
    assert "HISTORY_STORE" in (await resp.json())["error"]
    resp = await client.get(README_LOG_PATH)
    assert resp.status == 503 and "HISTORY_STORE" in (await resp.json())["error"]
    assert not local.requests


async def test_ids_are_scoped_per_key(local_proxy: LocalProxy) -> None:
    client, local = await local_proxy(proxy_api_keys="key-one-123,key-two-456")
    one = {"Authorization": "Bearer key-one-123"}
    two = {"Authorization": "Bearer key-two-456"}
    await post_chat(client, {"conversation_id": 7, "prompt": "one's"}, headers=one)
    resp = await client.get("/log?conversation_id=7", headers=two)
    assert resp.status == 404, "another key's conversation is not there"
    await post_chat(client, {"conversation_id": 7, "prompt": "two's"}, headers=two)
    assert local.sent() == [("system", SYSTEM), ("user", "two's")]
    log = (await (await client.get("/log?conversation_id=7", headers=one)).json())["log"]
    assert log == ["あなた: one's", "モデル: 答え 1"]
    assert (await client.post("/chat", json={"prompt": "x"})).status == 401


async def test_compat_provider_sends_it_elsewhere(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy(history_store="memory://", compat_provider="chatgpt")
    first = await post_chat(client, {"conversation_id": 5, "prompt": "こんにちは"})
    assert first == {"conversation_id": 5, "response": "Hello!"}
    await post_chat(client, {"conversation_id": 5, "prompt": "もう一度"})
    sent = [m["content"] for m in fake_openai.requests[-1]["messages"]]
    assert sent == [SYSTEM, "こんにちは", "Hello!", "もう一度"]


async def test_an_unconfigured_own_provider_names_compat_provider(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    """A user moving from the Llama server with only an OpenAI key is told the route wants
    `local`, and that COMPAT_PROVIDER sends it to the provider they have."""
    client = await proxy(history_store="memory://")
    resp = await client.post("/chat", json={"prompt": "こんにちは"})
    assert resp.status == 503
    message = (await resp.json())["error"]
    assert "'local'" in message and "LOCAL_MODEL" in message
    assert "COMPAT_PROVIDER" in message and "chatgpt" in message
    assert not fake_openai.requests


async def test_a_post_chat_of_no_older_shape_says_which_fields(local_proxy: LocalProxy) -> None:
    client, _ = await local_proxy()
    resp = await client.post("/chat", json={"messages": [{"role": "user", "content": "x"}]})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert "prompt, message, user_input" in error and "POST /{provider}/" in error
    resp = await client.post("/chat", json={"prompt": "x", "message": "y"})
    assert resp.status == 400 and "got prompt, message" in (await resp.json())["error"]
    assert (await client.post("/chat", data="[1]", headers=JSON)).status == 400
    resp = await client.get("/chat")
    assert resp.status == 405, "a fixed route now, no longer an unknown provider"


async def test_ids_are_64_bit_integers_and_anything_else_a_400(local_proxy: LocalProxy) -> None:
    client, _ = await local_proxy()
    for number in (2**63 - 1, -(2**63), 0):
        answer = await post_chat(client, {"prompt": "edge", "conversation_id": number})
        assert answer["conversation_id"] == number
        log = await client.get("/log", params={"conversation_id": str(number)})
        assert log.status == 200 and (await log.json())["log"][0] == "あなた: edge"
    for bad in (2**63, -(2**63) - 1, 10**30, 1.5, [1], {"id": 1}):
        resp = await client.post("/chat", json={"prompt": "x", "conversation_id": bad})
        assert resp.status == 400, bad
        assert (await resp.json())["param"] == "conversation_id"
    resp = await client.get("/log", params={"conversation_id": str(10**30)})
    assert resp.status == 400
