"""The history layer through the real app, on every store: what goes upstream, what is kept."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.conftest import Client, Proxy
from tests.fakes.ernie_server import FakeErnie
from tests.fakes.openai_server import (
    FakeOpenAI,
    completion_body,
    reply,
    status,
    stream,
    tool_call_reply,
)
from tests.history_stores import STORE_URLS, app_postgres, store_url
from tests.sse_client import read_events

SYSTEM = "You are a helpful assistant. Answer clearly and concisely."
__all__ = ["app_postgres"]  # a fixture, used by name


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def echo(request: web.Request) -> web.StreamResponse:
    """Answers `re: <last user message>`, so a stored pair shows which request it was."""
    body = await request.json()
    text = f"re: {body['messages'][-1]['content']}"
    if body.get("stream"):
        return await stream([text])(request)
    return web.json_response(completion_body(text))


@pytest.fixture(params=STORE_URLS)
def history_proxy(
    request: pytest.FixtureRequest, proxy: Proxy, tmp_path: Any, app_postgres: str
) -> Proxy:
    url = store_url(request.param, tmp_path, app_postgres)

    async def start(**overrides: Any) -> Client:
        return await proxy(history_store=url, **overrides)

    return start


def new_id() -> str:
    return f"test-{uuid.uuid4().hex}"


async def chat(client: Client, cid: str, text: str, **extra: Any) -> Any:
    body = {"messages": [user(text)], "conversation_id": cid, **extra}
    resp = await client.post("/chatgpt/", json=body)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_a_conversation_is_remembered(history_proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = echo
    client = await history_proxy()
    cid = new_id()
    first = await chat(client, cid, "one")
    assert first["conversation_id"] == cid
    second = await chat(client, cid, "two")
    sent = fake_openai.requests[-1]["messages"]
    assert [m["content"] for m in sent] == [SYSTEM, "one", "re: one", "two"]
    # The answer is what went upstream, plus the reply.
    assert [m["content"] for m in second["messages"]] == [*(m["content"] for m in sent), "re: two"]

    stored = await (await client.get(f"/history/{cid}")).json()
    assert stored["conversation_id"] == cid
    assert [(m["role"], m["content"]) for m in stored["messages"]] == [
        ("user", "one"),
        ("assistant", "re: one"),
        ("user", "two"),
        ("assistant", "re: two"),
    ]
    for message in stored["messages"]:
        offset = datetime.fromisoformat(message["timestamp"]).utcoffset()
        assert offset is not None and offset.total_seconds() == 0
        assert message["model"] == "chatgpt/gpt-4o-mini"
    assert stored["model"] == "chatgpt/gpt-4o-mini"


async def test_without_an_id_it_stays_stateless(
    history_proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await history_proxy()
    body = await (await client.post("/chatgpt/", json={"messages": [user("hi")]})).json()
    assert "conversation_id" not in body
    await client.post("/chatgpt/", json={"messages": [user("again")]})
    assert [m["content"] for m in fake_openai.requests[-1]["messages"]] == [SYSTEM, "again"]


async def test_only_the_last_turns_go_upstream(
    history_proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = echo
    client = await history_proxy(history_max_turns=2)
    cid = new_id()
    for text in ("one", "two", "three", "four"):
        await chat(client, cid, text)
    sent = [m["content"] for m in fake_openai.requests[-1]["messages"]]
    assert sent == [SYSTEM, "two", "re: two", "three", "re: three", "four"]
    stored = await (await client.get(f"/history/{cid}")).json()
    assert len(stored["messages"]) == 8, "the store keeps everything"


async def test_a_failed_request_stores_nothing(
    history_proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = echo
    client = await history_proxy(upstream_retries=0)
    cid = new_id()
    await chat(client, cid, "kept")
    fake_openai.default = status(500)
    resp = await client.post("/chatgpt/", json={"messages": [user("lost")], "conversation_id": cid})
    assert resp.status == 502
    stored = await (await client.get(f"/history/{cid}")).json()
    assert [m["content"] for m in stored["messages"]] == ["kept", "re: kept"]


async def test_a_stream_stores_its_reply_when_it_completes(
    history_proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = stream(["Hel", "lo"])
    client = await history_proxy()
    cid = new_id()
    resp = await client.post(
        "/chatgpt/", json={"messages": [user("hi")], "conversation_id": cid, "stream": True}
    )
    events = await read_events(resp)
    assert events[-1][0] == "done" and events[-1][1]["conversation_id"] == cid
    stored = await (await client.get(f"/history/{cid}")).json()
    assert [m["content"] for m in stored["messages"]] == ["hi", "Hello"]

    # A stream that fails half-way stores nothing of its turn.
    fake_openai.default = stream(["x"], done=False)
    resp = await client.post(
        "/chatgpt/", json={"messages": [user("cut")], "conversation_id": cid, "stream": True}
    )
    assert (await read_events(resp))[-1][0] == "error"
    stored = await (await client.get(f"/history/{cid}")).json()
    assert len(stored["messages"]) == 2


async def test_a_client_that_leaves_mid_stream_stores_nothing(
    history_proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = stream(["a", "b", "c"], pause=0.2)
    client = await history_proxy()
    cid = new_id()
    resp = await client.post(
        "/chatgpt/", json={"messages": [user("bye")], "conversation_id": cid, "stream": True}
    )
    await resp.content.readuntil(b"\n\n")
    resp.close()
    await asyncio.sleep(0.8)
    stored = await client.get(f"/history/{cid}")
    assert stored.status == 200 and (await stored.json())["messages"] == []


async def test_v1_with_the_sdk_and_the_header(
    history_proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = echo
    client = await history_proxy()
    cid = new_id()
    sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="x", max_retries=0)
    async with sdk:
        for text in ("one", "two"):
            reply = await sdk.chat.completions.create(
                model="chatgpt/gpt-4o",
                messages=[user(text)],  # type: ignore[list-item]
                extra_headers={"X-Conversation-ID": cid},
            )
        assert reply.choices[0].message.content == "re: two"
        assert (reply.model_extra or {})["conversation_id"] == cid
        chunks = await sdk.chat.completions.create(
            model="chatgpt/gpt-4o",
            messages=[user("three")],  # type: ignore[list-item]
            extra_body={"conversation_id": cid},
            stream=True,
        )
        assert isinstance(chunks, openai.AsyncStream)
        async for _ in chunks:
            pass
    sent = [m["content"] for m in fake_openai.requests[-1]["messages"]]
    assert sent == [SYSTEM, "one", "re: one", "two", "re: two", "three"]


async def test_conversations_belong_to_their_key(
    history_proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = echo
    client = await history_proxy(proxy_api_keys="key-one-123,key-two-456")
    one = {"Authorization": "Bearer key-one-123"}
    two = {"Authorization": "Bearer key-two-456"}
    cid = new_id()
    body = {"messages": [user("mine")], "conversation_id": cid}
    assert (await client.post("/chatgpt/", json=body, headers=one)).status == 200
    assert (await client.get(f"/history/{cid}", headers=one)).status == 200
    for resp in (
        await client.get(f"/history/{cid}", headers=two),
        await client.delete(f"/history/{cid}", headers=two),
        await client.get(f"/history/{cid}/model", headers=two),
        await client.put(f"/history/{cid}/model", json={"model": "chatgpt/x"}, headers=two),
    ):
        assert resp.status == 404
        assert "mine" not in await resp.text()
    # The same id from another key is that key's own conversation: it cannot take the
    # first key's id, nor learn that it is in use, nor see a word of it.
    other = {"messages": [user("theirs")], "conversation_id": cid}
    resp = await client.post("/chatgpt/", json=other, headers=two)
    assert resp.status == 200 and "mine" not in await resp.text()
    assert [m["content"] for m in fake_openai.requests[-1]["messages"]][1:] == ["theirs"]
    mine = await (await client.get(f"/history/{cid}", headers=one)).json()
    assert [m["content"] for m in mine["messages"]] == ["mine", "re: mine"]
    theirs = await (await client.get(f"/history/{cid}", headers=two)).json()
    assert [m["content"] for m in theirs["messages"]] == ["theirs", "re: theirs"]


async def test_twenty_concurrent_turns_never_interleave(
    history_proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = echo
    client = await history_proxy()
    cid = new_id()
    await asyncio.gather(*(chat(client, cid, f"turn {n}") for n in range(20)))
    messages = (await (await client.get(f"/history/{cid}")).json())["messages"]
    assert len(messages) == 40
    for question, answer in zip(messages[::2], messages[1::2], strict=True):
        assert question["role"] == "user" and answer["content"] == f"re: {question['content']}"
    assert sorted(m["content"] for m in messages[::2]) == sorted(f"turn {n}" for n in range(20))


async def test_the_conversation_model_endpoints(
    history_proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await history_proxy()
    created = await client.post("/history", json={"model": "openai/gpt-4o"})
    assert created.status == 201
    cid = (await created.json())["conversation_id"]
    assert (await (await client.get(f"/history/{cid}/model")).json())["model"] == "chatgpt/gpt-4o"

    # No model named: the conversation's, on the native route and on /v1.
    await chat(client, cid, "native")
    resp = await client.post(
        "/v1/chat/completions", json={"messages": [user("v1")], "conversation_id": cid}
    )
    assert resp.status == 200, await resp.text()
    assert [r["model"] for r in fake_openai.requests] == ["gpt-4o", "gpt-4o"]

    put = await client.put(f"/history/{cid}/model", json={"model": "chatgpt/gpt-4.1"})
    assert put.status == 200
    await chat(client, cid, "again")
    assert fake_openai.requests[-1]["model"] == "gpt-4.1"
    bad = await client.put(f"/history/{cid}/model", json={"model": "nobody/x"})
    assert bad.status == 400 and (await bad.json())["param"] == "model"
    # A request that names a model still wins.
    await chat(client, cid, "named", model="gpt-4o-mini")
    assert fake_openai.requests[-1]["model"] == "gpt-4o-mini"


async def test_v1_without_model_or_conversation_model_is_400(history_proxy: Proxy) -> None:
    client = await history_proxy()
    resp = await client.post("/v1/chat/completions", json={"messages": [user("x")]})
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "model"


async def test_delete_forgets_and_unknown_ids_are_404(
    history_proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await history_proxy()
    cid = new_id()
    await chat(client, cid, "soon gone")
    assert (await client.delete(f"/history/{cid}")).status == 200
    for resp in (
        await client.get(f"/history/{cid}"),
        await client.delete(f"/history/{cid}"),
        await client.get(f"/history/{new_id()}"),
    ):
        assert resp.status == 404
        assert (await resp.json())["type"] == "not_found"
    # The id can start a conversation again, empty.
    await chat(client, cid, "fresh")
    assert [m["content"] for m in fake_openai.requests[-1]["messages"]] == [SYSTEM, "fresh"]


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "ü"])
async def test_bad_ids_are_400(history_proxy: Proxy, bad: str) -> None:
    client = await history_proxy()
    body = await client.post("/chatgpt/", json={"messages": [user("x")], "conversation_id": bad})
    assert body.status == 400 and (await body.json())["param"] == "conversation_id"
    if bad.isascii():
        header = await client.post(
            "/chatgpt/", json={"messages": [user("x")]}, headers={"X-Conversation-ID": bad}
        )
        assert header.status == 400 and (await header.json())["param"] == "X-Conversation-ID"
    path = await client.get(f"/history/{bad}")
    assert path.status == 400


async def test_ids_may_hold_slashes_and_colons(
    history_proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await history_proxy()
    cid = f"team/alice:{uuid.uuid4().hex}"
    await chat(client, cid, "hello")
    assert (await client.get(f"/history/{cid}")).status == 200
    assert (await client.get(f"/history/{cid}/model")).status == 200


async def test_ernie_need_clear_history_clears_the_conversation(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    client = await ernie_proxy(history_store="memory://")
    cid = new_id()
    body = {"messages": [user("你好")], "conversation_id": cid}
    assert (await client.post("/ernie/", json=body)).status == 200
    fake_ernie.extra = {"need_clear_history": True}
    resp = await client.post("/ernie/", json=body)
    assert (await resp.json())["finish_reason"] == "content_filter"
    assert (await (await client.get(f"/history/{cid}")).json())["messages"] == []
    fake_ernie.extra = {}
    await client.post("/ernie/", json=body)
    assert fake_ernie.chats[-1]["messages"] == [user("你好")], "nothing of before went upstream"


async def test_without_history_store_a_conversation_id_is_400(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    resp = await client.post("/chatgpt/", json={"messages": [user("x")], "conversation_id": "c"})
    assert resp.status == 400 and "HISTORY_STORE" in (await resp.json())["error"]
    assert (await client.get("/history/c")).status == 404
    assert fake_openai.requests == []


async def test_a_tool_exchange_keeps_its_question_and_final_answer_only(
    history_proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await history_proxy()
    cid = new_id()
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    fake_openai.queue(tool_call_reply("weather", '{"city": "Paris"}'), reply("Sunny, 24 C"))
    body = {"model": "gpt-4o", "messages": [user("Weather in Paris?")], "tools": tools}
    first = await client.post("/v1/chat/completions", json=body, headers={"X-Conversation-ID": cid})
    call = (await first.json())["choices"][0]["message"]["tool_calls"][0]
    results = [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 24"},
    ]
    second = await client.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": results, "tools": tools, "conversation_id": cid},
    )
    assert second.status == 200
    # Upstream got the stored question, then the tool call and its result as sent.
    roles = [m["role"] for m in fake_openai.requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "tool"]
    stored = (await (await client.get(f"/history/{cid}")).json())["messages"]
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "Weather in Paris?"),
        ("assistant", "Sunny, 24 C"),
    ]


async def test_a_clients_own_system_prompt_outlives_the_window(
    history_proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    """Found in review: once the first turn left HISTORY_MAX_TURNS, the operator's prompt
    replaced the client's own."""
    fake_openai.default = echo
    client = await history_proxy(history_max_turns=1)
    cid = new_id()
    persona = {"role": "system", "content": "CLIENT PERSONA"}
    first = {"messages": [persona, user("one")], "conversation_id": cid}
    assert (await client.post("/chatgpt/", json=first)).status == 200
    for text in ("two", "three", "four"):
        await chat(client, cid, text)
    sent = [m["content"] for m in fake_openai.requests[-1]["messages"]]
    assert sent == ["CLIENT PERSONA", "three", "re: three", "four"]


async def test_two_chatproxy_copies_on_one_postgresql_never_interleave_turns(
    proxy: Proxy, fake_openai: FakeOpenAI, app_postgres: str
) -> None:
    """Two apps, each with its own pool, as two copies behind a gateway would be."""
    fake_openai.default = echo
    one, two = await proxy(history_store=app_postgres), await proxy(history_store=app_postgres)
    cid = new_id()
    await asyncio.gather(
        *(chat(copy, cid, f"turn {n}") for n in range(20) for copy in ((one, two)[n % 2],))
    )
    messages = (await (await one.get(f"/history/{cid}")).json())["messages"]
    assert len(messages) == 40
    for question, answer in zip(messages[::2], messages[1::2], strict=True):
        assert answer["content"] == f"re: {question['content']}"
    assert messages == (await (await two.get(f"/history/{cid}")).json())["messages"]
