"""`/v1`: the official openai SDK, unmodified, against chatproxy."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from tests.conftest import Client, Proxy
from tests.fakes.openai_server import FakeOpenAI, stream
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
    client = await proxy()
    resp = await client.post(
        "/v1/chat/completions", json={"model": "gpt-4o", "messages": [USER], **extra}
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
        {"role": "user", "content": "hi there"},
    ]
    assert sent["stop"] == ["END"] and sent["max_tokens"] == 9
    assert sent["presence_penalty"] == 0.5
    assert "metadata" not in sent and "parallel_tool_calls" not in sent


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
