"""`/v1/responses` (not streamed) through the official openai SDK, for every provider;
chains of `previous_response_id` kept in the history store, across a restart."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from openai.types.responses import Response

from tests.conftest import AiohttpClient, Client, Proxy, openai_settings, serve
from tests.fakes.ernie_server import FakeErnie
from tests.fakes.gigachat_server import FakeGigaChat
from tests.fakes.openai_server import FakeOpenAI, reply, tool_call_reply


def sdk(client: Client, key: str = "k") -> openai.OpenAI:
    return openai.OpenAI(base_url=str(client.make_url("/v1")), api_key=key, max_retries=0)


def async_sdk(client: Client, key: str = "k") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=key, max_retries=0)


async def post(client: Client, **body: Any) -> tuple[int, Any]:
    resp = await client.post("/v1/responses", json=body)
    return resp.status, await resp.json()


async def test_sync_sdk_text_response_with_instructions(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()

    def call() -> Response:
        with sdk(client) as api:
            return api.responses.create(
                model="chatgpt/gpt-4o-mini", input="hi", instructions="Answer briefly."
            )

    response = await asyncio.to_thread(call)
    assert response.output_text == "Hello!"
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage is not None and response.usage.total_tokens == 10
    sent = fake_openai.requests[0]["messages"]
    assert sent[-2:] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "hi"},
    ]


async def test_the_answer_keeps_to_the_sdk_response_type(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    status, body = await post(
        client,
        model="chatgpt/gpt-4o",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        metadata={"run": "1"},
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
    )
    assert status == 200, body
    strict = Response.model_validate(body, strict=False)
    assert strict.model == "chatgpt/gpt-4o" and strict.metadata == {"run": "1"}
    assert strict.tools[0].type == "function"
    assert body["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "Hello!",
        "annotations": [],
        "logprobs": [],
    }


async def test_async_sdk_through_gigachat(giga_proxy: Proxy, fake_gigachat: FakeGigaChat) -> None:
    client = await giga_proxy()
    async with async_sdk(client) as api:
        response = await api.responses.create(
            model="gigachat/GigaChat", input="Привет", instructions="Будь краток", temperature=0
        )
    assert response.output_text == fake_gigachat.reply_text
    sent = fake_gigachat.chats[0]["messages"]
    assert sent[0]["role"] == "system", "one system message: the operator's, then instructions"
    assert sent[0]["content"].endswith("\n\nБудь краток")


async def test_async_sdk_through_ernie(ernie_proxy: Proxy, fake_ernie: FakeErnie) -> None:
    client = await ernie_proxy()
    async with async_sdk(client) as api:
        response = await api.responses.create(
            model="ernie/ernie-speed-128k", input="你好", instructions="简短"
        )
    assert response.output_text == "你好！"
    assert fake_ernie.chats[0]["system"].endswith("\n\n简短")


async def test_a_chain_survives_a_restart_on_sqlite(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    settings = openai_settings(
        fake_openai, history_store="sqlite:///responses.db", system_prompt_mode="off"
    )
    fake_openai.queue(reply("one"), reply("two"), reply("three"), reply("branch"))
    client = await serve(aiohttp_client, settings)
    async with async_sdk(client) as api:
        first = await api.responses.create(model="gpt-4o", input="q1", instructions="sys")
        second = await api.responses.create(
            model="gpt-4o", input="q2", previous_response_id=first.id
        )
    await client.close()

    client = await serve(aiohttp_client, settings)  # a new process, the same file
    async with async_sdk(client) as api:
        third = await api.responses.create(
            model="gpt-4o", input="q3", previous_response_id=second.id
        )
        branch = await api.responses.create(
            model="gpt-4o", input="q2b", previous_response_id=first.id
        )
        again = await api.responses.retrieve(second.id)
    assert third.output_text == "three" and third.previous_response_id == second.id
    texts = [[m["content"] for m in r["messages"]] for r in fake_openai.requests]
    assert texts[2] == ["q1", "one", "q2", "two", "q3"], "instructions are not carried along"
    assert texts[0] == ["sys", "q1"]
    assert texts[3] == ["q1", "one", "q2b"], "a branch sees its own chain only"
    assert branch.output_text == "branch"
    assert again.id == second.id and again.output_text == "two"


async def test_get_and_delete(aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI) -> None:
    client = await serve(aiohttp_client, openai_settings(fake_openai, history_store="memory://"))

    def run() -> tuple[Response, Response]:
        with sdk(client) as api:
            first = api.responses.create(model="gpt-4o", input="hi")
            got = api.responses.retrieve(first.id)
            api.responses.delete(first.id)
            with pytest.raises(openai.NotFoundError):
                api.responses.retrieve(first.id)
            with pytest.raises(openai.NotFoundError):
                api.responses.delete(first.id)
            return first, got

    first, got = await asyncio.to_thread(run)
    assert got.output_text == first.output_text == "Hello!"
    Response.model_validate(got.model_dump())
    status, body = await post(client, model="gpt-4o", input="x", previous_response_id=first.id)
    assert status == 404 and body["error"]["param"] == "previous_response_id"


async def test_store_false_is_not_kept_but_may_continue_a_chain(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    settings = openai_settings(fake_openai, history_store="memory://", system_prompt_mode="off")
    client = await serve(aiohttp_client, settings)
    fake_openai.queue(reply("one"), reply("two"))
    _, first = await post(client, model="gpt-4o", input="q1")
    _, second = await post(
        client, model="gpt-4o", input="q2", previous_response_id=first["id"], store=False
    )
    assert second["store"] is False
    assert [m["content"] for m in fake_openai.requests[1]["messages"]] == ["q1", "one", "q2"]
    resp = await client.get(f"/v1/responses/{second['id']}")
    assert resp.status == 404


async def test_responses_are_scoped_per_key(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    settings = openai_settings(fake_openai, history_store="memory://", proxy_api_keys="k1,k2")
    client = await serve(aiohttp_client, settings)
    async with async_sdk(client, "k1") as mine, async_sdk(client, "k2") as theirs:
        first = await mine.responses.create(model="gpt-4o", input="secret")
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.create(model="gpt-4o", input="x", previous_response_id=first.id)
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.delete(first.id)
        assert (await mine.responses.retrieve(first.id)).output_text == "Hello!"


async def test_without_a_history_store(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy()
    status, body = await post(client, model="gpt-4o", input="hi")
    assert status == 200 and body["store"] is False, "the default store is served, not kept"
    status, body = await post(client, model="gpt-4o", input="hi", store=True)
    assert status == 400 and body["error"]["param"] == "store"
    assert "HISTORY_STORE" in body["error"]["message"]
    status, body = await post(client, model="gpt-4o", input="hi", previous_response_id="resp_1")
    assert status == 400 and body["error"]["param"] == "previous_response_id"
    resp = await client.get(f"/v1/responses/{body.get('id', 'resp_1')}")
    assert resp.status == 404


async def test_function_tools_round_trip(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(tool_call_reply("lookup", '{"q":"x"}'))
    client = await proxy()
    tools: Any = [
        {
            "type": "function",
            "name": "lookup",
            "description": "Look it up",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    async with async_sdk(client) as api:
        first = await api.responses.create(
            model="gpt-4o",
            input="find x",
            tools=tools,
            tool_choice={"type": "function", "name": "lookup"},
        )
        call = first.output[-1]
        assert call.type == "function_call"
        assert (call.name, call.arguments, call.call_id) == ("lookup", '{"q":"x"}', "call_abc123")
        second = await api.responses.create(
            model="gpt-4o",
            tools=tools,
            input=[
                {"role": "user", "content": "find x"},
                {
                    "type": "function_call",
                    "call_id": call.call_id,
                    "name": "lookup",
                    "arguments": call.arguments,
                },
                {"type": "function_call_output", "call_id": call.call_id, "output": "42"},
            ],
        )
    assert second.output_text == "Hello!"
    sent = fake_openai.requests
    assert sent[0]["tools"][0]["function"]["name"] == "lookup"
    assert sent[0]["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert sent[1]["messages"][-2]["tool_calls"][0]["id"] == "call_abc123"
    assert sent[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_abc123",
        "content": "42",
    }


async def test_gigachat_function_calls(giga_proxy: Proxy, fake_gigachat: FakeGigaChat) -> None:
    client = await giga_proxy()
    status, body = await post(
        client,
        model="gigachat/GigaChat",
        input="Погода в Москве?",
        tools=[
            {
                "type": "function",
                "name": "weather",
                "parameters": {"type": "object", "properties": {}},
            }
        ],
    )
    assert status == 200, body
    Response.model_validate(body)
    calls = [item for item in body["output"] if item["type"] == "function_call"]
    assert calls and calls[0]["name"] == "weather"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search_preview"}]}, "tools.0.type"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"background": True}, "background"),
        ({"include": ["file_search_call.results"]}, "include"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input.0.content.0",
        ),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input.0"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"model": "nope/x"}, "model"),
    ],
)
async def test_what_chatproxy_cannot_do_is_a_clear_refusal(
    proxy: Proxy, fake_openai: FakeOpenAI, extra: dict[str, Any], param: str
) -> None:
    client = await proxy()
    status, body = await post(client, **{"model": "gpt-4o", "input": "hi", **extra})
    assert status in (400, 404), body
    assert body["error"]["param"] == param
    assert fake_openai.requests == []


async def test_ernie_refuses_tools_and_json_formats(ernie_proxy: Proxy) -> None:
    client = await ernie_proxy()
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    status, body = await post(client, model="ernie/ernie-speed-128k", input="hi", tools=tools)
    assert status == 400 and body["error"]["param"] == "tools"
    status, body = await post(
        client, model="ernie/ernie-speed-128k", input="hi", text={"format": {"type": "json_object"}}
    )
    assert status == 400 and body["error"]["param"] == "text.format"


async def test_function_call_outputs_continue_a_stored_response(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    """OpenAI's loop: only the outputs are sent back, with previous_response_id."""
    settings = openai_settings(fake_openai, history_store="memory://", system_prompt_mode="off")
    client = await serve(aiohttp_client, settings)
    fake_openai.queue(tool_call_reply("lookup", '{"q":"x"}'), reply("x is 42"))
    tools: Any = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    async with async_sdk(client) as api:
        first = await api.responses.create(model="gpt-4o", input="find x", tools=tools)
        call = first.output[-1]
        assert call.type == "function_call"
        shown = await api.responses.retrieve(first.id)
        assert shown.output == first.output, "GET shows the calls as the answer did"
        second = await api.responses.create(
            model="gpt-4o",
            tools=tools,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "42"}],
        )
        third = await api.responses.create(
            model="gpt-4o", input="and y?", previous_response_id=second.id
        )
    assert second.output_text == "x is 42"
    messages = fake_openai.requests[1]["messages"]
    assert messages[0] == {"role": "user", "content": "find x"}
    assert messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[1]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"q":"x"}'}
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "42"}
    later = [m["content"] for m in fake_openai.requests[2]["messages"]]
    assert later == ["find x", "x is 42", "and y?"], "the chain keeps the text, not the calls"
    assert third.previous_response_id == second.id
