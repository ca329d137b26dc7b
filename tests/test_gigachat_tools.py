"""OpenAI tool calling through GigaChat's functions, translated both ways."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from chatproxy.clients.gigachat_functions import (
    adapt_answer,
    function_call_from,
    functions_from,
    gigachat_messages,
)
from chatproxy.errors import InvalidRequestError
from tests.conftest import Client, Proxy
from tests.fakes.gigachat_server import FakeGigaChat

FORECAST: Any = {
    "type": "function",
    "function": {
        "name": "forecast",
        "description": "Weather forecast for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    },
}
ASK: Any = {"role": "user", "content": "Какая погода в Москве?"}


def test_tool_calls_and_results_become_function_calls_and_function_messages() -> None:
    translated = gigachat_messages(
        [
            {"role": "system", "content": "Be brief."},
            ASK,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "forecast", "arguments": '{"city": "Москва"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"t": -3}'},
            {"role": "tool", "tool_call_id": "call_1", "content": "snow"},
            {"role": "developer", "content": "Answer in Russian."},
        ]
    )
    assert translated == [
        {"role": "system", "content": "Be brief.\n\nAnswer in Russian."},
        ASK,
        {
            "role": "assistant",
            "content": "",
            "function_call": {"name": "forecast", "arguments": {"city": "Москва"}},
        },
        {"role": "function", "name": "forecast", "content": '{"t": -3}'},
        {"role": "function", "name": "forecast", "content": '{"result": "snow"}'},
    ]


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([{"role": "tool", "tool_call_id": "nope", "content": "{}"}], "tool call made earlier"),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "a", "function": {"name": "x", "arguments": "{}"}},
                        {"id": "b", "function": {"name": "y", "arguments": "{}"}},
                    ],
                }
            ],
            "one function call per turn",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "text parts only",
        ),
    ],
)
def test_what_gigachat_cannot_take_is_a_clear_400(
    messages: list[dict[str, Any]], fragment: str
) -> None:
    with pytest.raises(InvalidRequestError, match=fragment):
        gigachat_messages(messages)


def test_tool_choice_maps_to_function_call() -> None:
    functions = functions_from({"tools": [FORECAST]})
    assert functions == [FORECAST["function"]]
    named = {"type": "function", "function": {"name": "forecast"}}
    assert function_call_from({"tool_choice": named}, functions) == {"name": "forecast"}
    assert function_call_from({"tool_choice": "required"}, functions) == {"name": "forecast"}
    assert function_call_from({"tool_choice": "none"}, functions) == "none"
    assert function_call_from({}, functions) is None


def test_a_function_call_answer_becomes_tool_calls() -> None:
    answer = adapt_answer(
        {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": "",
                        "function_call": {"name": "forecast", "arguments": {"city": "Москва"}},
                    },
                    "finish_reason": "function_call",
                }
            ]
        }
    )
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert json.loads(call["function"]["arguments"]) == {"city": "Москва"}


def sdk(client: Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=str(client.make_url("/v1")), api_key="x", max_retries=0)


async def test_tool_call_round_trip_through_the_sdk(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    client = await giga_proxy()

    def conversation() -> tuple[Any, Any]:
        with sdk(client) as api:
            first = api.chat.completions.create(
                model="gigachat/GigaChat-Pro", messages=[ASK], tools=[FORECAST]
            )
            call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
            second = api.chat.completions.create(
                model="gigachat/GigaChat-Pro",
                messages=[
                    ASK,
                    first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
                    {"role": "tool", "tool_call_id": call.id, "content": '{"t": -3}'},
                ],
                tools=[FORECAST],
            )
            return first, second

    first, second = await asyncio.to_thread(conversation)
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "forecast"
    assert json.loads(call.function.arguments) == {"city": "Москва", "days": 2}
    sent = fake_gigachat.chats[0]
    assert sent["functions"] == [FORECAST["function"]] and "tools" not in sent
    assert second.choices[0].message.content == 'Итог: {"t": -3}'
    history = fake_gigachat.chats[1]["messages"]
    assert history[-2]["function_call"] == {
        "name": "forecast",
        "arguments": {"city": "Москва", "days": 2},
    }
    assert history[-1] == {"role": "function", "name": "forecast", "content": '{"t": -3}'}


async def test_streamed_function_call_arrives_as_a_tool_call_delta(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    client = await giga_proxy()

    def call() -> list[Any]:
        with sdk(client) as api:
            named: Any = {"type": "function", "function": {"name": "forecast"}}
            chunks = api.chat.completions.create(
                model="gigachat/GigaChat",
                messages=[ASK],
                tools=[FORECAST],
                tool_choice=named,
                stream=True,
            )
            return list(chunks)

    chunks = await asyncio.to_thread(call)
    calls = [
        c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls
    ]
    assert len(calls) == 1 and calls[0][0].function.name == "forecast"
    assert json.loads(calls[0][0].function.arguments or "") == {"city": "Москва", "days": 2}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert fake_gigachat.chats[0]["function_call"] == {"name": "forecast"}


async def test_plain_gigachat_requests_are_unchanged(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    client = await giga_proxy()
    resp = await client.post(
        "/v1/chat/completions", json={"model": "gigachat/GigaChat", "messages": [ASK]}
    )
    assert (await resp.json())["choices"][0]["message"]["content"] == "Привет от GigaChat"
    assert "functions" not in fake_gigachat.chats[0]
