"""Streamed `/v1/responses`: OpenAI's typed SSE events, checked against the SDK's types."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pydantic
from openai.types.responses import Response, ResponseStreamEvent

from tests.conftest import AiohttpClient, Client, Proxy, openai_settings, serve
from tests.fakes.ernie_server import FakeErnie
from tests.fakes.gigachat_server import FakeGigaChat
from tests.fakes.openai_server import FakeOpenAI, stream, tool_call_stream
from tests.sse_client import read_events

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


async def raw_events(client: Client, **body: Any) -> list[dict[str, Any]]:
    """The stream's events, each held to the SDK's own event types (strictly)."""
    resp = await client.post("/v1/responses", json={"stream": True, **body})
    assert resp.status == 200, await resp.text()
    events = []
    for name, data in await read_events(resp):
        assert name == data["type"], "the SSE event name is the event's type"
        EVENTS.validate_python(data, strict=True)
        events.append(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


async def test_text_events_in_order(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = stream(["Hel", "lo"])
    client = await proxy()
    events = await raw_events(client, model="chatgpt/gpt-4o", input="hi")
    assert [e["type"] for e in events] == TEXT_EVENTS
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == [
        "Hel",
        "lo",
    ]
    final = Response.model_validate(events[-1]["response"])
    assert final.output_text == "Hello" and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens == 2
    created = events[0]["response"]
    assert created["status"] == "in_progress" and created["id"] == final.id
    item_ids = {e["item_id"] for e in events if "item_id" in e}
    assert item_ids == {final.output[0].id}


async def test_sync_sdk_stream_iterator(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = stream(["При", "вет"])
    client = await proxy()

    def call() -> tuple[list[str], str]:
        with openai.OpenAI(base_url=str(client.make_url("/v1")), api_key="k", max_retries=0) as api:
            kinds: list[str] = []
            with api.responses.stream(model="chatgpt/gpt-4o", input="hi") as events:
                for event in events:
                    kinds.append(event.type)
                final = events.get_final_response()
            return kinds, final.output_text

    kinds, text = await asyncio.to_thread(call)
    assert text == "Привет"
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


async def test_async_sdk_stream_through_gigachat(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    client = await giga_proxy()
    async with openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key="k", max_retries=0
    ) as api:
        deltas = []
        response = await api.responses.create(model="gigachat/GigaChat", input="hi", stream=True)
        async for event in response:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            last = event
    assert "".join(deltas)
    assert last.type == "response.completed"
    assert last.response.output_text == "".join(deltas)


async def test_stream_through_ernie(ernie_proxy: Proxy, fake_ernie: FakeErnie) -> None:
    client = await ernie_proxy()
    events = await raw_events(client, model="ernie/ernie-speed-128k", input="你好")
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["你", "好", "！"]
    assert Response.model_validate(events[-1]["response"]).output_text == "你好！"


async def test_tool_call_events(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = tool_call_stream("lookup", ['{"q":', '"x"}'])
    client = await proxy()
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    events = await raw_events(client, model="gpt-4o", input="find", tools=tools)
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in kinds
    assert "response.output_text.delta" not in kinds
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == '{"q":"x"}'
    final = Response.model_validate(events[-1]["response"])
    call = final.output[0]
    assert call.type == "function_call" and call.name == "lookup"
    assert call.arguments == '{"q":"x"}' and call.call_id


async def test_a_failure_mid_stream_ends_with_error_and_failed(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = stream(["Hel", "lo"], stall_after=1)
    client = await proxy(upstream_read_timeout=0.3)
    events = await raw_events(client, model="gpt-4o", input="hi")
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    failed = Response.model_validate(events[-1]["response"])
    assert failed.status == "failed" and failed.error is not None


async def test_a_streamed_response_is_stored_and_continued(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = stream(["one"])
    settings = openai_settings(
        fake_openai, history_store="sqlite:///stream.db", system_prompt_mode="off"
    )
    client = await serve(aiohttp_client, settings)
    events = await raw_events(client, model="gpt-4o", input="q1")
    first_id = events[-1]["response"]["id"]
    stored = await client.get(f"/v1/responses/{first_id}")
    assert (await stored.json())["output"][0]["content"][0]["text"] == "one"
    await raw_events(client, model="gpt-4o", input="q2", previous_response_id=first_id)
    assert [m["content"] for m in fake_openai.requests[-1]["messages"]] == ["q1", "one", "q2"]


async def test_streamed_calls_are_kept_for_the_next_request(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    settings = openai_settings(fake_openai, history_store="memory://", system_prompt_mode="off")
    client = await serve(aiohttp_client, settings)
    fake_openai.queue(tool_call_stream("lookup", ['{"q":', '"x"}']), stream(["42!"]))
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    events = await raw_events(client, model="gpt-4o", input="find", tools=tools)
    final = events[-1]["response"]
    call = final["output"][0]
    shown = await (await client.get(f"/v1/responses/{final['id']}")).json()
    assert shown["output"] == final["output"], "GET shows the call, item id and all"
    await raw_events(
        client,
        model="gpt-4o",
        tools=tools,
        previous_response_id=final["id"],
        input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "42"}],
    )
    sent = fake_openai.requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == '{"q":"x"}'
    assert sent[2]["tool_call_id"] == call["call_id"]


async def test_a_failed_stream_is_not_a_stored_response(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue(stream(["one"]), stream(["Hel", "lo"], stall_after=1))
    settings = openai_settings(fake_openai, history_store="memory://", upstream_read_timeout=0.3)
    client = await serve(aiohttp_client, settings)
    first = (await raw_events(client, model="gpt-4o", input="q1"))[-1]["response"]
    events = await raw_events(client, model="gpt-4o", input="q2", previous_response_id=first["id"])
    assert events[-1]["type"] == "response.failed"
    failed = await client.get(f"/v1/responses/{events[-1]['response']['id']}")
    assert failed.status == 404, "not the previous response's answer shown as its own"
    assert (await client.get(f"/v1/responses/{first['id']}")).status == 200
