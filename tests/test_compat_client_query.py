"""The OpenAI conversation server's README replayed: `GET /models`, `GET/POST /model`,
`POST /query`, `GET/DELETE /history?client_name=`, on the history layer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from tests.conftest import Client, Proxy
from tests.fakes.openai_server import FakeOpenAI, completion_body

SYSTEM = "You are a helpful assistant. Answer clearly and concisely."
NAME = "your_client_name"
JSON = {"Content-Type": "application/json"}
# The README's curl lines, as written.
README_MODEL_BODY = '{"model": "gpt-4", "client_name": "your_client_name"}'
README_QUERY_BODY = '{"input": "안녕하세요", "client_name": "your_client_name"}'
README_HISTORY_PATH = "/history?client_name=your_client_name"


async def echo(request: web.Request) -> web.StreamResponse:
    """Answers `re: <last user message>`, so a stored pair shows which request it was."""
    body = await request.json()
    return web.json_response(completion_body(f"re: {body['messages'][-1]['content']}"))


async def ok_json(resp: Any) -> Any:
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def query(client: Client, text: str, name: str = NAME, **kwargs: Any) -> Any:
    return await ok_json(
        await client.post("/query", json={"input": text, "client_name": name}, **kwargs)
    )


async def test_the_readme_from_models_to_a_cleared_history(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = echo
    client = await proxy(history_store="memory://")
    models = await ok_json(await client.get("/models"))
    assert models["object"] == "list"
    for card in models["data"]:
        assert {"id", "object", "created", "owned_by"} <= set(card)

    assert await ok_json(await client.get(f"/model?client_name={NAME}")) == {"model": "gpt-4o-mini"}
    resp = await client.post("/model", data=README_MODEL_BODY, headers=JSON)
    assert await ok_json(resp) == {"model": "gpt-4"}
    assert await ok_json(await client.get(f"/model?client_name={NAME}")) == {"model": "gpt-4"}

    resp = await client.post("/query", data=README_QUERY_BODY, headers=JSON)
    assert await ok_json(resp) == {"response": "re: 안녕하세요"}
    assert fake_openai.requests[-1]["model"] == "gpt-4"
    await query(client, "잘 지내요?")
    assert [m["content"] for m in fake_openai.requests[-1]["messages"]] == [
        SYSTEM,
        "안녕하세요",
        "re: 안녕하세요",
        "잘 지내요?",
    ]

    history = await ok_json(await client.get(README_HISTORY_PATH))
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "안녕하세요"),
        ("assistant", "re: 안녕하세요"),
        ("user", "잘 지내요?"),
        ("assistant", "re: 잘 지내요?"),
    ]
    for message in history:
        assert set(message) == {"role", "content", "timestamp"}
        assert datetime.fromisoformat(message["timestamp"]).utcoffset() is not None

    cleared = await ok_json(await client.delete(README_HISTORY_PATH))
    assert isinstance(cleared["message"], str)
    assert await ok_json(await client.get(README_HISTORY_PATH)) == []
    assert await ok_json(await client.get(f"/model?client_name={NAME}")) == {"model": "gpt-4"}
    await query(client, "처음부터")
    assert [m["content"] for m in fake_openai.requests[-1]["messages"]] == [SYSTEM, "처음부터"]


async def test_a_model_picked_from_the_models_list(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy(history_store="memory://")
    models = await ok_json(await client.get("/models"))
    picked = models["data"][0]["id"]  # chatgpt/gpt-4o: what a client shows and sends back
    body = {"model": picked, "client_name": NAME}
    assert await ok_json(await client.post("/model", json=body)) == {"model": picked}
    assert await ok_json(await client.get(f"/model?client_name={NAME}")) == {"model": "gpt-4o"}
    await query(client, "hi")
    assert fake_openai.requests[-1]["model"] == "gpt-4o"


async def test_clients_are_kept_apart_whatever_their_names(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = echo
    client = await proxy(history_store="memory://")
    await query(client, "하나", name="홍길동")
    await query(client, "둘", name="김철수")
    assert [m["content"] for m in fake_openai.requests[-1]["messages"]] == [SYSTEM, "둘"]
    history = await ok_json(await client.get("/history", params={"client_name": "홍길동"}))
    assert [m["content"] for m in history] == ["하나", "re: 하나"]
    assert await ok_json(await client.get("/history?client_name=nobody")) == []


async def test_clients_are_scoped_per_key(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy(history_store="memory://", proxy_api_keys="key-one-123,key-two-456")
    one = {"Authorization": "Bearer key-one-123"}
    two = {"Authorization": "Bearer key-two-456"}
    await query(client, "one's", headers=one)
    assert await ok_json(await client.get(README_HISTORY_PATH, headers=two)) == []
    await ok_json(
        await client.post("/model", json={"model": "gpt-4", "client_name": NAME}, headers=two)
    )
    assert await ok_json(await client.get(f"/model?client_name={NAME}", headers=one)) == {
        "model": "gpt-4o-mini"
    }
    assert (await client.get(README_HISTORY_PATH)).status == 401


async def test_errors_keep_the_error_field(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy(history_store="memory://")
    for resp in (
        await client.post("/query", json={"client_name": NAME}),
        await client.post("/query", json={"input": "hi"}),
        await client.post("/model", json={"model": "gpt 4!", "client_name": NAME}),
        await client.get("/model"),
    ):
        assert resp.status == 400
        assert isinstance((await resp.json())["error"], str)
    assert not fake_openai.requests


async def test_chatproxys_own_history_routes_are_untouched(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy(history_store="memory://")
    created = await client.post("/history")
    assert created.status == 201
    conversation = (await created.json())["conversation_id"]
    assert (await ok_json(await client.get(f"/history/{conversation}")))["messages"] == []
    resp = await client.get("/history")
    assert resp.status == 400
    assert "client_name" in (await resp.json())["error"]
    assert "/history/{conversation_id}" in (await resp.json())["error"]
    assert (await client.delete("/history")).status == 400
    assert (await client.put("/history")).status == 405


async def test_without_the_history_layer(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy()
    for resp in (
        await client.post("/query", data=README_QUERY_BODY, headers=JSON),
        await client.get(f"/model?client_name={NAME}"),
        await client.post("/model", data=README_MODEL_BODY, headers=JSON),
        await client.get(README_HISTORY_PATH),
        await client.delete(README_HISTORY_PATH),
    ):
        assert resp.status == 503
        assert "HISTORY_STORE" in (await resp.json())["error"]
    assert not fake_openai.requests
    assert (await client.get("/models")).status == 200


async def test_compat_provider_picks_the_default(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy(history_store="memory://", compat_provider="ernie")
    assert (await client.get(f"/model?client_name={NAME}")).status == 503, "ernie is off"
    body = {"model": "chatgpt/gpt-4o", "client_name": NAME}
    await ok_json(await client.post("/model", json=body))
    assert await ok_json(await client.get(f"/model?client_name={NAME}")) == {
        "model": "chatgpt/gpt-4o"
    }
    await query(client, "hi")
    assert fake_openai.requests[-1]["model"] == "gpt-4o"


async def test_any_client_name_is_its_own_conversation_and_a_bad_one_a_400(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    """A client_name no conversation id can hold (spaces, emoji, 1024 characters) is kept
    by its hash, apart from every other; a wrong type or an oversize name is a 400."""
    fake_openai.default = echo
    client = await proxy(history_store="memory://")
    names = ["a b", "a_b", "a/b?c", "🙂", "x" * 1024, "x" * 1023]
    for name in names:
        await query(client, f"from {name[:8]}", name=name)
    for name in names:
        history = await ok_json(await client.get("/history", params={"client_name": name}))
        assert [m["content"] for m in history] == [f"from {name[:8]}", f"re: from {name[:8]}"]
    for body in (
        {"input": "x", "client_name": "x" * 1025},
        {"input": "x", "client_name": 7},
        {"input": "x", "client_name": ""},
        {"input": ["x"], "client_name": "a"},
    ):
        refused = await client.post("/query", json=body)
        assert refused.status == 400, body
        assert isinstance((await refused.json())["error"], str)
    too_long = await client.get("/model", params={"client_name": "x" * 1025})
    assert too_long.status == 400
