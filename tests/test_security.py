"""The holes an adversarial test found: each one reproduced as it was reported, now closed."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import OPENAI_KEY, Proxy
from tests.fakes.ernie_server import FakeErnie
from tests.fakes.gigachat_server import FakeGigaChat
from tests.fakes.openai_server import FakeOpenAI, chunk, hang, raw, status, stream
from tests.sse_client import read_events

USER = {"role": "user", "content": "hi"}


# --- 1. a model name never walks out of ERNIE's base URL ---------------------------------


@pytest.mark.parametrize(
    "model", ["../../x", "a/../../../oauth/2.0/token", "..", ".", "%2e%2e", "x?y=1", "x#y", "a/b"]
)
async def test_ernie_model_name_cannot_escape_the_base_url(
    ernie_proxy: Proxy, fake_ernie: FakeErnie, model: str
) -> None:
    client = await ernie_proxy()
    native = await client.post("/ernie/", json={"model": model, "messages": [USER]})
    v1 = await client.post(
        "/v1/chat/completions", json={"model": f"ernie/{model}", "messages": [USER]}
    )
    for resp in (native, v1):
        assert resp.status == 400
        assert "model" in await resp.text()
    assert fake_ernie.chats == [] and fake_ernie.token_requests == 0, "nothing left chatproxy"


async def test_a_custom_ernie_endpoint_is_one_plain_segment(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    client = await ernie_proxy()
    resp = await client.post("/ernie/", json={"model": "my-endpoint_v1.2", "messages": [USER]})
    assert resp.status == 200
    assert fake_ernie.endpoints == ["my-endpoint_v1.2"]


# --- 2. secrets an upstream echoes never reach the client ----------------------------------


async def test_openai_error_echoing_the_key_is_masked(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    echo = {"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}"}}
    fake_openai.default = status(500, echo)
    client = await proxy(upstream_retries=0)
    for path, body in (
        ("/chatgpt/", {"messages": [USER]}),
        ("/v1/chat/completions", {"model": "chatgpt/gpt-4o", "messages": [USER]}),
    ):
        resp = await client.post(path, json=body)
        text = await resp.text()
        assert resp.status == 502
        assert OPENAI_KEY not in text and "Incorrect API key provided" in text


async def test_mid_stream_error_echoing_the_key_is_masked(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    async def leaky(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(f"data: {chunk('Hel')}\n\n".encode())
        error = {"error": {"message": f"key {OPENAI_KEY} was revoked"}}
        await resp.write(f"data: {json.dumps(error)}\n\n".encode())
        return resp

    fake_openai.default = leaky
    client = await proxy()
    for path, body in (
        ("/chatgpt/", {"messages": [USER], "stream": True}),
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": [USER], "stream": True}),
    ):
        resp = await client.post(path, json=body)
        text = await resp.text()
        assert resp.status == 200
        assert "revoked" in text and OPENAI_KEY not in text


async def test_ernie_error_echoing_the_access_token_is_masked(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    client = await ernie_proxy(upstream_retries=0)
    assert (await client.post("/ernie/", json={"messages": [USER]})).status == 200
    token = fake_ernie.issued[-1]
    fake_ernie.script.append(
        web.json_response({"error_code": 336100, "error_msg": f"bad token {token} here"})
    )
    resp = await client.post("/ernie/", json={"messages": [USER]})
    text = await resp.text()
    assert resp.status == 502 and "bad token" in text and token not in text


async def test_gigachat_error_echoing_the_token_is_masked(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    client = await giga_proxy(upstream_retries=0)
    assert (await client.post("/gigachat/", json={"messages": [USER]})).status == 200
    token = fake_gigachat.issued[-1]

    async def leaky(request: web.Request) -> web.StreamResponse:
        message = f"token {request.headers['Authorization']} is not allowed here"
        return web.json_response({"status": 500, "message": message}, status=500)

    fake_gigachat.answer = leaky
    resp = await client.post("/gigachat/", json={"messages": [USER]})
    text = await resp.text()
    assert resp.status == 502 and "is not allowed here" in text and token not in text


async def test_status_masks_a_key_in_a_base_url(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy(openai_base_url=f"{fake_openai.base_url}?api_key=hunter22secret")
    text = await (await client.get("/status")).text()
    assert "hunter22secret" not in text


# --- 3. malformed upstream answers are 502s, never 500s ------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"choices": 5},
        {"choices": [5]},
        {"choices": [{"message": 5}]},
        {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "x"}},
        {"choices": [{"message": {"content": "x"}}], "usage": [1]},
        {"choices": [{"message": {"content": "x", "tool_calls": "call"}}]},
        {"choices": [{"message": {"content": "x"}, "finish_reason": 7}]},
        [1, 2],
    ],
)
async def test_malformed_completion_is_502(
    proxy: Proxy, fake_openai: FakeOpenAI, body: Any
) -> None:
    fake_openai.default = raw(json.dumps(body).encode())
    client = await proxy()
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 502
    assert (await resp.json())["type"] == "upstream_bad_response"


@pytest.mark.parametrize(
    "event",
    [
        '{"choices": 5}',
        '{"choices": [{"delta": 5}]}',
        '{"choices": [{"delta": {"content": 5}}]}',
        '{"choices": [], "usage": {"prompt_tokens": "x"}}',
        "[1, 2]",
        "[" * 5000,
    ],
)
async def test_malformed_stream_chunk_is_an_error_event(
    proxy: Proxy, fake_openai: FakeOpenAI, event: str
) -> None:
    async def bad(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(f"data: {chunk('ok')}\n\ndata: {event}\n\n".encode())
        return resp

    fake_openai.default = bad
    client = await proxy()
    resp = await client.post("/chatgpt/", json={"messages": [USER], "stream": True})
    events = await read_events(resp)
    assert events[0] == ("delta", {"content": "ok"})
    assert events[-1][0] == "error" and events[-1][1]["type"] == "upstream_bad_response"


async def test_gigachat_choices_not_a_list_is_502(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    async def bad(request: web.Request) -> web.StreamResponse:
        return web.json_response({"choices": 5, "model": "GigaChat"})

    client = await giga_proxy()
    fake_gigachat.answer = bad
    resp = await client.post("/gigachat/", json={"messages": [USER]})
    assert resp.status == 502


async def test_ernie_bad_usage_and_list_events_are_502(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    client = await ernie_proxy()
    fake_ernie.extra = {"usage": {"prompt_tokens": "x"}}
    resp = await client.post("/ernie/", json={"messages": [USER]})
    assert resp.status == 502
    fake_ernie.extra = {}

    async def list_event(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: [1, 2]\n\n")
        return resp

    fake_ernie.stream_events = None
    original = fake_ernie._stream
    fake_ernie._stream = list_event  # type: ignore[method-assign]
    try:
        resp = await client.post("/ernie/", json={"messages": [USER], "stream": True})
        assert resp.status == 502
        assert "not a JSON object" in (await resp.json())["error"]
    finally:
        fake_ernie._stream = original  # type: ignore[method-assign]


# --- 4. hostile tool shapes on /v1 with gigachat models: 400 naming the field -------------


def _tool_call(**function: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", **function}]}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"messages": [USER, {"role": "assistant", "tool_calls": ["x"]}]}, "messages.1"),
        ({"messages": [USER, _tool_call(function="x")]}, "messages.1"),
        ({"messages": [USER, _tool_call(function={"name": "f", "arguments": 5})]}, "messages.1"),
        ({"messages": [USER, {"role": "tool", "content": "x", "tool_call_id": []}]}, "messages.1"),
        ({"tools": [5]}, "tools.0"),
        ({"tool_choice": {"function": "x"}}, "tool_choice"),
        ({"functions": ["x"], "tool_choice": "required"}, "functions.0"),
        ({"messages": [USER, _tool_call(function={"name": "f", "arguments": "5"})]}, "messages.1"),
        ({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}, "tools.0.type"),
    ],
)
async def test_bad_tool_shapes_are_400_naming_the_field(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat, extra: dict[str, Any], param: str
) -> None:
    client = await giga_proxy()
    body = {"model": "gigachat/GigaChat", "messages": [USER], **extra}
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert error["param"].startswith(param), error
    assert fake_gigachat.chats == []


# --- 5. an upstream's body is bounded ------------------------------------------------------


async def test_huge_upstream_body_is_502_without_reading_it_all(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"choices": [{"message": {"content": "')
        for _ in range(64):  # 64 MiB, unless chatproxy stops reading first
            await resp.write(b"x" * (1 << 20))
        return resp

    fake_openai.default = huge
    client = await proxy(max_upstream_body_bytes=1 << 20, upstream_retries=0)
    started = time.monotonic()
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 502
    assert "MAX_UPSTREAM_BODY_BYTES" in (await resp.json())["error"]
    assert time.monotonic() - started < 3


async def test_endless_stream_stops_at_the_size_cap(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = stream(["x" * 1000] * 5000)
    client = await proxy(max_upstream_body_bytes=256 * 1024)
    resp = await client.post("/chatgpt/", json={"messages": [USER], "stream": True})
    events = await read_events(resp)
    assert events[-1][0] == "error" and "MAX_UPSTREAM_BODY_BYTES" in events[-1][1]["error"]


# --- 8. the smaller ones -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/ready", "/status", "/models"])
async def test_wrong_method_on_a_fixed_route_is_405(proxy: Proxy, path: str) -> None:
    client = await proxy()
    resp = await client.post(path, json={})
    assert resp.status == 405
    assert (await resp.json())["type"] == "method_not_allowed"


async def test_unknown_provider_is_still_404(proxy: Proxy) -> None:
    client = await proxy()
    resp = await client.post("/nope/", json={"messages": [USER]})
    assert resp.status == 404 and "known providers" in (await resp.json())["error"]


async def test_stream_cut_by_the_total_deadline_says_so(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = stream(["tick"] * 1000, pause=0.05, done=False)
    client = await proxy(upstream_timeout=0.6, upstream_read_timeout=0.5)
    resp = await client.post("/chatgpt/", json={"messages": [USER], "stream": True})
    events = await read_events(resp)
    assert events[-1][0] == "error"
    assert "did not finish its stream within 0.6s" in events[-1][1]["error"]


async def test_first_byte_timeout_applies_to_plain_calls(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = hang()
    client = await proxy(upstream_first_byte_timeout=0.3, upstream_timeout=5)
    started = time.monotonic()
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 504
    assert "first byte within 0.3s" in (await resp.json())["error"]
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("answer", "code", "words"),
    [
        ({"error": {"message": "context too long", "code": 400}}, 400, "context too long"),
        ({"status": 429, "message": "too many requests"}, 429, "too many requests"),
        ({"error": {"message": "model overloaded"}}, 502, "model overloaded"),
    ],
)
async def test_stream_request_answered_with_json_error_keeps_its_message(
    proxy: Proxy, fake_openai: FakeOpenAI, answer: dict[str, Any], code: int, words: str
) -> None:
    fake_openai.default = raw(json.dumps(answer).encode())
    client = await proxy(upstream_retries=0)
    resp = await client.post("/chatgpt/", json={"messages": [USER], "stream": True})
    assert resp.status == code
    assert words in (await resp.json())["error"]
