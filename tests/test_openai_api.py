"""`/v1`: the official openai SDK, unmodified, against chatproxy."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from chatproxy.openai_schemas import ChatCompletion, ChatCompletionChunk
from tests.conftest import Client, Proxy
from tests.fakes.openai_server import (
    FakeOpenAI,
    reply,
    stream,
    tool_call_reply,
    tool_call_stream,
)
from tests.sse_client import read_events

USER: Any = {"role": "user", "content": "hi"}


def sdk(client: Client, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=str(client.make_url("/v1")), api_key="proxy-key", max_retries=0, **kwargs
    )


def async_sdk(client: Client) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key="proxy-key", max_retries=0
    )


async def test_sync_sdk_completion(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy(proxy_api_keys="proxy-key")

    def call() -> Any:
        with sdk(client) as api:
            return api.chat.completions.create(
                model="openai/gpt-4o", messages=[USER], temperature=0.5, user="u-1", seed=3
            )

    completion = await asyncio.to_thread(call)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Hello!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 10
    sent = fake_openai.requests[0]
    assert sent["model"] == "gpt-4o"
    assert sent["messages"][0]["role"] == "system", "the same system prompt rule as native"
    assert sent["user"] == "u-1" and sent["seed"] == 3


async def test_the_answer_keeps_to_the_chat_completion_schema(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    """The handler builds its JSON by hand; ChatCompletion is the contract it must keep."""
    client = await proxy()
    resp = await client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": [USER]})
    body = await resp.read()
    completion = ChatCompletion.model_validate_json(body)
    assert completion.choices[0].message.content == "Hello!"
    assert completion.id.startswith("chatcmpl-") and len(completion.id) == 41
    as_built = json.loads(body)
    assert as_built == completion.model_dump(mode="json", exclude_unset=True), "no stray field"


@pytest.mark.parametrize("tools", [False, True])
async def test_stream_chunks_keep_to_the_chunk_schema(
    proxy: Proxy, fake_openai: FakeOpenAI, tools: bool
) -> None:
    """The framer assembles chunks from bytes; ChatCompletionChunk is their contract."""
    fake_openai.default = (
        tool_call_stream("lookup", ['{"q":', '"x"}']) if tools else stream(["При", "вет"])
    )
    client = await proxy()
    resp = await client.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-4o",
            "messages": [USER],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    lines = [line for line in (await resp.text()).split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    payloads = [line.removeprefix("data: ") for line in lines[:-1]]
    chunks = [ChatCompletionChunk.model_validate_json(payload) for payload in payloads]
    for payload, chunk in zip(payloads, chunks, strict=True):
        assert json.loads(payload) == chunk.model_dump(mode="json", exclude_unset=True)
    assert len({c.id for c in chunks}) == 1 and chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    if tools:  # the fake's tool-call stream reports no usage
        assert finishes[-1] == "tool_calls"
        assert any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    else:
        assert finishes[-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].choices == []
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Привет"


async def test_sync_sdk_stream(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = stream(["Hel", "lo"])
    client = await proxy()

    def call() -> list[Any]:
        with sdk(client) as api:
            return list(
                api.chat.completions.create(
                    model="chatgpt/gpt-4o-mini",
                    messages=[USER],
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )

    chunks = await asyncio.to_thread(call)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 2


async def test_async_sdk_completion_stream_and_models(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    async with async_sdk(client) as api:
        completion = await api.chat.completions.create(model="gpt-4o-mini", messages=[USER])
        assert completion.choices[0].message.content == "Hello!"
        fake_openai.default = stream(["a", "b", "c"])
        parts = [
            chunk.choices[0].delta.content or ""
            async for chunk in await api.chat.completions.create(
                model="gpt-4o-mini", messages=[USER], stream=True
            )
            if chunk.choices
        ]
        assert "".join(parts) == "abc"
        models = await api.models.list()
        ids = [m.id for m in models.data]
        assert ids == ["chatgpt/gpt-4o", "chatgpt/gpt-4o-mini"]


async def test_bad_request_surfaces_as_bad_request_error(proxy: Proxy) -> None:
    client = await proxy()
    async with async_sdk(client) as api:
        with pytest.raises(openai.BadRequestError) as caught:
            await api.chat.completions.create(model="gpt-4o", messages=[USER], n=2)
        assert caught.value.status_code == 400
        body: Any = caught.value.body
        assert body["param"] == "n"
        with pytest.raises(openai.BadRequestError):
            await api.chat.completions.create(model="gpt-4o", messages=[], temperature=5)
        with pytest.raises(openai.NotFoundError):
            await api.models.retrieve("nope")


async def test_missing_key_is_authentication_error(proxy: Proxy) -> None:
    client = await proxy(proxy_api_keys="other-key")
    async with async_sdk(client) as api:
        with pytest.raises(openai.AuthenticationError):
            await api.chat.completions.create(model="gpt-4o", messages=[USER])


async def test_unconfigured_provider_prefix_is_503_in_openai_envelope(proxy: Proxy) -> None:
    client = await proxy()
    resp = await client.post(
        "/v1/chat/completions", json={"model": "gigachat/GigaChat-Pro", "messages": [USER]}
    )
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert set(error) >= {"message", "type", "code"}
    assert "gigachat" in error["message"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages.0.role"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:"}}],
                    }
                ]
            },
            "messages.0.content",
        ),
    ],
)
async def test_fields_that_would_change_the_answer_are_refused(
    proxy: Proxy, fake_openai: FakeOpenAI, extra: dict[str, Any], param: str
) -> None:
    """Refused on providers without tools or images, before anything is sent anywhere."""
    client = await proxy(ernie_api_key="ernie-key", ernie_secret_key="ernie-secret")
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": "ernie/ernie-4.0-8k", "messages": [USER], **extra},
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == param
    assert not fake_openai.requests


async def test_harmless_fields_are_accepted(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy()
    resp = await client.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-4o",
            "n": 1,
            "stop": "END",
            "presence_penalty": 0.5,
            "max_completion_tokens": 9,
            "parallel_tool_calls": False,
            "metadata": {"a": "b"},
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}],
                },
            ],
        },
    )
    assert resp.status == 200
    sent = fake_openai.requests[0]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}],
        },
    ], "OpenAI gets the parts as sent; developer is said as system"
    assert sent["stop"] == ["END"] and sent["max_tokens"] == 9
    assert sent["presence_penalty"] == 0.5
    assert "metadata" not in sent
    assert sent["parallel_tool_calls"] is False


async def test_mid_stream_failure_is_an_error_chunk_then_done(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = stream(["x"], done=False)
    client = await proxy()
    resp = await client.post(
        "/v1/chat/completions", json={"model": "gpt-4o", "messages": [USER], "stream": True}
    )
    events = await read_events(resp)
    assert events[-1] == ("message", "[DONE]")
    assert "error" in events[-2][1]
    assert events[0][1]["object"] == "chat.completion.chunk"


async def test_bare_model_routes_to_default_provider(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy()
    resp = await client.post(
        "/v1/chat/completions", json={"model": "some-unlisted-model", "messages": [USER]}
    )
    assert resp.status == 200
    assert fake_openai.requests[0]["model"] == "some-unlisted-model"


async def test_too_many_messages_is_400(proxy: Proxy) -> None:
    client = await proxy(max_messages=2)
    resp = await client.post(
        "/v1/chat/completions", json={"model": "gpt-4o", "messages": [USER] * 3}
    )
    assert resp.status == 400
    assert "at most 2 messages" in (await resp.json())["error"]["message"]


WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def test_tool_calls_round_trip_through_the_sdk(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = tool_call_reply("get_weather", '{"city": "Paris"}')
    client = await proxy()
    async with async_sdk(client) as api:
        first = await api.chat.completions.create(
            model="gpt-4o", messages=[USER], tools=[WEATHER_TOOL], tool_choice="auto"
        )
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert first.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "get_weather"  # type: ignore[union-attr]
        assert call.function.arguments == '{"city": "Paris"}'  # type: ignore[union-attr]
        fake_openai.default = reply("It is sunny in Paris.")
        conversation: Any = [
            USER,
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"},
        ]
        second = await api.chat.completions.create(
            model="gpt-4o", tools=[WEATHER_TOOL], messages=conversation
        )
    assert second.choices[0].message.content == "It is sunny in Paris."
    sent = fake_openai.requests[0]
    assert sent["tools"] == [WEATHER_TOOL] and sent["tool_choice"] == "auto"
    followup = fake_openai.requests[1]["messages"]
    assert [m["role"] for m in followup] == ["system", "user", "assistant", "tool"]
    assert followup[2]["tool_calls"][0]["id"] == call.id
    assert followup[3] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}


async def test_streamed_tool_calls_reach_the_sdk(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = tool_call_stream("get_weather", ['{"city":', ' "Paris"}'])
    client = await proxy()
    async with async_sdk(client) as api:
        stream = await api.chat.completions.create(
            model="gpt-4o", messages=[USER], tools=[WEATHER_TOOL], stream=True
        )
        names, arguments, finish = [], "", None
        async for chunk in stream:
            if not chunk.choices:
                continue
            for tool_call in chunk.choices[0].delta.tool_calls or []:
                if tool_call.function and tool_call.function.name:
                    names.append(tool_call.function.name)
                arguments += (tool_call.function.arguments or "") if tool_call.function else ""
            finish = chunk.choices[0].finish_reason or finish
    assert names == ["get_weather"]
    assert arguments == '{"city": "Paris"}'
    assert finish == "tool_calls"
