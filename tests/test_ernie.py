"""ERNIE through chatproxy: endpoints, the separate system field, errors inside HTTP 200."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from chatproxy.config import DEFAULT_SYSTEM_PROMPT
from tests.conftest import Proxy
from tests.fakes.ernie_server import FakeErnie, error
from tests.sse_client import read_events

USER = {"role": "user", "content": "你好"}


async def test_reply_keeps_the_native_shape(ernie_proxy: Proxy, fake_ernie: FakeErnie) -> None:
    client = await ernie_proxy(system_prompt="你是助手。")
    resp = await client.post(
        "/ernie/", json={"messages": [USER], "temperature": 0, "max_tokens": 4000}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["messages"] == [
        {"role": "system", "content": "你是助手。"},
        USER,
        {"role": "assistant", "content": "你好！"},
    ]
    assert body["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == 11
    sent = fake_ernie.chats[0]
    assert sent["system"] == "你是助手。"
    assert sent["messages"] == [USER]
    assert sent["temperature"] == 0.01, "clamped into (0, 1]"
    assert sent["max_output_tokens"] == 4000 and "max_tokens" not in sent
    assert fake_ernie.endpoints == ["ernie-speed-128k"]
    await client.post(
        "/ernie/", json={"model": "ernie-4.0-8k", "messages": [USER], "max_tokens": 4000}
    )
    assert fake_ernie.chats[1]["max_output_tokens"] == 2048


@pytest.mark.parametrize(
    ("model", "endpoint"),
    [
        ("ernie-4.0-8k", "completions_pro"),
        ("ERNIE-3.5-8K", "completions"),
        ("ernie-speed-128k", "ernie-speed-128k"),
        ("ernie-speed-8k", "ernie_speed"),
        ("my-custom-endpoint", "my-custom-endpoint"),
    ],
)
async def test_model_picks_the_endpoint(
    ernie_proxy: Proxy, fake_ernie: FakeErnie, model: str, endpoint: str
) -> None:
    client = await ernie_proxy()
    resp = await client.post("/ernie/", json={"model": model, "messages": [USER]})
    assert resp.status == 200
    assert fake_ernie.endpoints == [endpoint]


async def test_messages_are_normalized_to_what_ernie_accepts(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    client = await ernie_proxy()
    messages = [
        {"role": "assistant", "content": "Welcome!"},
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "system", "content": "Be kind."},
        {"role": "assistant", "content": "c"},
        {"role": "user", "content": "d"},
    ]
    resp = await client.post("/ernie/", json={"messages": messages, "temperature": 1.7})
    assert resp.status == 200, await resp.text()
    sent = fake_ernie.chats[0]
    assert sent["messages"] == [
        {"role": "user", "content": "a\n\nb"},
        {"role": "assistant", "content": "c"},
        {"role": "user", "content": "d"},
    ]
    assert sent["system"] == f"{DEFAULT_SYSTEM_PROMPT}\n\nBe kind."
    assert sent["temperature"] == 1.0


async def test_oldest_turns_are_dropped_to_fit(ernie_proxy: Proxy, fake_ernie: FakeErnie) -> None:
    client = await ernie_proxy()
    history: list[dict[str, str]] = []
    for turn in range(10):
        history += [
            {"role": "user", "content": f"q{turn} " + "x" * 2500},
            {"role": "assistant", "content": f"a{turn} " + "y" * 2500},
        ]
    history.append({"role": "user", "content": "the newest question"})
    resp = await client.post("/ernie/", json={"model": "ernie-4.0-8k", "messages": history})
    assert resp.status == 200, await resp.text()
    sent = fake_ernie.chats[0]["messages"]
    assert sent[-1]["content"] == "the newest question"
    assert sum(len(m["content"]) for m in sent) <= 20_000
    assert sent[0]["content"].startswith("q") and sent[0]["role"] == "user"


async def test_last_message_over_the_limit_is_a_clear_400(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    client = await ernie_proxy()
    resp = await client.post(
        "/ernie/", json={"messages": [{"role": "user", "content": "x" * 5000}]}
    )
    assert resp.status == 400
    assert "4800" in (await resp.json())["error"]
    assert not fake_ernie.chats


async def test_no_user_message_is_400(ernie_proxy: Proxy) -> None:
    client = await ernie_proxy()
    resp = await client.post(
        "/ernie/", json={"messages": [{"role": "assistant", "content": "hello"}]}
    )
    assert resp.status == 400


async def test_expired_token_error_110_refreshes_once_and_retries(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    client = await ernie_proxy()
    assert (await client.post("/ernie/", json={"messages": [USER]})).status == 200
    fake_ernie.tokens.clear()
    resp = await client.post("/ernie/", json={"messages": [USER]})
    assert resp.status == 200
    assert fake_ernie.token_requests == 2


@pytest.mark.parametrize(
    ("code", "status", "fragment"),
    [
        (336003, 400, "336003"),
        (336001, 400, "336001"),
        (18, 429, "rate limit"),
        (336501, 429, "rate limit"),
        (336004, 502, "credentials"),
        (336000, 502, "336000"),
    ],
)
async def test_error_codes_in_200_map_to_statuses(
    ernie_proxy: Proxy, fake_ernie: FakeErnie, code: int, status: int, fragment: str
) -> None:
    fake_ernie.script.extend(error(code, "something about it") for _ in range(3))
    client = await ernie_proxy(upstream_retries=2)
    resp = await client.post("/ernie/", json={"messages": [USER]})
    assert resp.status == status
    message = (await resp.json())["error"]
    assert fragment in message and "something about it" in message


async def test_transient_error_code_is_retried(ernie_proxy: Proxy, fake_ernie: FakeErnie) -> None:
    fake_ernie.script.append(error(336100, "try again later"))
    client = await ernie_proxy()
    resp = await client.post("/ernie/", json={"messages": [USER]})
    assert resp.status == 200
    assert len(fake_ernie.chats) == 2


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"is_truncated": True}, "length"),
        ({"need_clear_history": True, "ban_round": -1}, "content_filter"),
    ],
)
async def test_finish_reasons(
    ernie_proxy: Proxy, fake_ernie: FakeErnie, extra: dict[str, Any], reason: str
) -> None:
    fake_ernie.extra = extra
    client = await ernie_proxy()
    body = await (await client.post("/ernie/", json={"messages": [USER]})).json()
    assert body["finish_reason"] == reason
    resp = await client.post(
        "/v1/chat/completions", json={"model": "ernie/ernie-4.0-8k", "messages": [USER]}
    )
    assert (await resp.json())["choices"][0]["finish_reason"] == reason


async def test_bad_keys_are_502_and_the_secret_is_never_echoed(ernie_proxy: Proxy) -> None:
    client = await ernie_proxy(ernie_secret_key="wrong-secret-value-123")
    resp = await client.post("/ernie/", json={"messages": [USER]})
    assert resp.status == 502
    text = await resp.text()
    assert "rejected chatproxy's credentials" in text and "unknown client id" in text
    assert "wrong-secret-value-123" not in text


async def test_streaming_until_is_end(ernie_proxy: Proxy, fake_ernie: FakeErnie) -> None:
    client = await ernie_proxy()
    events = await read_events(
        await client.post("/ernie/", json={"messages": [USER], "stream": True})
    )
    assert [e[1]["content"] for e in events if e[0] == "delta"] == ["你", "好", "！"]
    done = events[-1][1]
    assert done["messages"][-1]["content"] == "你好！"
    assert done["usage"]["total_tokens"] == 6
    assert fake_ernie.chats[0]["stream"] is True


async def test_stream_without_is_end_is_an_error_event(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    fake_ernie.stream_events = [{"result": "半", "is_end": False}]
    client = await ernie_proxy()
    events = await read_events(
        await client.post("/ernie/", json={"messages": [USER], "stream": True})
    )
    assert events[-1][0] == "error"
    assert "is_end" in events[-1][1]["error"]


async def test_stream_refused_before_first_byte_is_a_json_400(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    fake_ernie.script.append(error(336003, "invalid temperature"))
    client = await ernie_proxy()
    resp = await client.post("/ernie/", json={"messages": [USER], "stream": True})
    assert resp.status == 400
    assert "invalid temperature" in (await resp.json())["error"]


async def test_stream_with_expired_token_refreshes(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    client = await ernie_proxy()
    await client.post("/ernie/", json={"messages": [USER]})
    fake_ernie.tokens.clear()
    events = await read_events(
        await client.post("/ernie/", json={"messages": [USER], "stream": True})
    )
    assert events[-1][0] == "done"


async def test_models_list_the_endpoint_table(ernie_proxy: Proxy) -> None:
    client = await ernie_proxy()
    models = (await (await client.get("/ernie/models")).json())["models"]
    assert "ernie-4.0-8k" in models and "ernie-speed-128k" in models
    status = (await (await client.get("/status")).json())["providers"]["ernie"]
    assert status["token_held"] is False


def test_fake_error_helper_is_a_200() -> None:
    assert isinstance(error(1, "x"), web.Response) and error(1, "x").status == 200


async def test_v1_text_parts_are_joined_for_ernie(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    client = await ernie_proxy()
    resp = await client.post(
        "/v1/chat/completions",
        json={
            "model": "ernie/ernie-4.0-8k",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "你"}, {"type": "text", "text": "好"}],
                }
            ],
        },
    )
    assert resp.status == 200
    assert fake_ernie.chats[0]["messages"] == [{"role": "user", "content": "你好"}]
