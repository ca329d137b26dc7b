"""What a hostile client or upstream, or an SDK user off the happy path, finds in
`/v1/responses`, `/v1/embeddings` and `/v1/models/{id}`: each case was a bug once."""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from chatproxy.history.layer import scoped
from chatproxy.keys import HISTORY
from tests.conftest import AiohttpClient, AiohttpServer, Client, openai_settings, serve
from tests.fakes.embeddings import EmbeddingOpenAI, fake_vector
from tests.fakes.openai_server import FakeOpenAI, completion_body, tool_call_reply
from tests.test_fault_matrix_openai_surface import check_response_events

USER = {"role": "user", "content": "hi"}


async def app_with_history(aiohttp_client: AiohttpClient, fake: FakeOpenAI, **more: Any) -> Client:
    settings = openai_settings(
        fake, history_store="memory://", system_prompt_mode="off", upstream_retries=0, **more
    )
    return await serve(aiohttp_client, settings)


async def post(client: Client, path: str = "/v1/responses", **body: Any) -> tuple[int, Any]:
    resp = await client.post(path, json=body)
    raw = await resp.read()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw


def conversations(client: Client) -> set[str]:
    """The ids a memory store holds."""
    store = client.app[HISTORY].store
    return set(getattr(store, "_data", None) or {})


def has_conversation(client: Client, conversation_id: str, owner: str = "") -> Any:
    history = client.app[HISTORY]
    return history.store.info(scoped(conversation_id, owner), owner)


# --- response ids: only the ones chatproxy made, and only its own records ------------


async def test_the_calls_record_is_not_a_response(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    client = await app_with_history(aiohttp_client, fake_openai)
    fake_openai.queue(tool_call_reply("lookup", '{"q":"x"}'))
    status, first = await post(client, model="gpt-4o", input="hi", tools=[FUNCTION])
    assert status == 200 and first["output"][-1]["type"] == "function_call"
    record = f"{first['id']}:calls"
    got = await client.get(f"/v1/responses/{record}")
    assert got.status == 404, await got.text()
    status, body = await post(client, model="gpt-4o", input="x", previous_response_id=record)
    assert status == 404 and body["error"]["param"] == "previous_response_id", body
    gone = await client.delete(f"/v1/responses/{record}")
    assert gone.status == 404, await gone.text()
    assert await has_conversation(client, record) is not None, "the record must survive"


async def test_a_conversation_is_not_a_response(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    """A chat conversation the client named is no response: not readable, deletable or
    continuable through /v1/responses."""
    client = await app_with_history(aiohttp_client, fake_openai)
    status, _ = await post(
        client, "/v1/chat/completions", model="gpt-4o", messages=[USER], conversation_id="mine"
    )
    assert status == 200
    assert (await client.get("/v1/responses/mine")).status == 404
    status, body = await post(client, model="gpt-4o", input="x", previous_response_id="mine")
    assert status == 404 and body["error"]["param"] == "previous_response_id", body
    assert (await client.delete("/v1/responses/mine")).status == 404
    assert await has_conversation(client, "mine") is not None


async def test_a_corrupt_calls_record_is_no_500(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    """The `<id>:calls` record is a conversation the client can write to through chat."""
    client = await app_with_history(aiohttp_client, fake_openai)
    fake_openai.queue(tool_call_reply("lookup", '{"q":"x"}'))
    _, first = await post(client, model="gpt-4o", input="hi", tools=[FUNCTION])
    record = f"{first['id']}:calls"
    status, _ = await post(
        client, "/v1/chat/completions", model="gpt-4o", messages=[USER], conversation_id=record
    )
    assert status == 200
    status, body = await post(
        client,
        model="gpt-4o",
        previous_response_id=first["id"],
        input=[{"type": "function_call_output", "call_id": "call_abc123", "output": "42"}],
    )
    assert status != 500, body


FUNCTION = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}


# --- failures store nothing ------------------------------------------------------------


def failing_stream() -> Any:
    async def behave(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        event = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "par"}, "finish_reason": None}],
        }
        await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        await resp.write(b'data: {"error": {"message": "boom"}}\n\n')
        return resp

    return behave


def failing() -> Any:
    async def behave(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"message": "boom"}}, status=500)

    return behave


@pytest.mark.parametrize("chained", [False, True])
async def test_a_failed_stream_leaves_nothing_behind(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI, chained: bool
) -> None:
    client = await app_with_history(aiohttp_client, fake_openai)
    _, first = await post(client, model="gpt-4o", input="q1")
    fake_openai.queue(failing_stream())
    extra = {"previous_response_id": first["id"]} if chained else {}
    resp = await client.post(
        "/v1/responses", json={"model": "gpt-4o", "input": "q2", "stream": True, **extra}
    )
    events = check_response_events(await resp.read())
    assert events[-1]["type"] == "response.failed"
    failed_id = events[0]["response"]["id"]
    assert await has_conversation(client, failed_id) is None, "a failed response was kept"
    status, body = await post(client, model="gpt-4o", input="x", previous_response_id=failed_id)
    assert status == 404, body


@pytest.mark.parametrize("chained", [False, True])
async def test_a_failed_plain_response_leaves_nothing_behind(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI, chained: bool
) -> None:
    client = await app_with_history(aiohttp_client, fake_openai)
    _, first = await post(client, model="gpt-4o", input="q1")
    before = conversations(client)
    fake_openai.queue(failing())
    extra = {"previous_response_id": first["id"]} if chained else {}
    status, body = await post(client, model="gpt-4o", input="q2", **extra)
    assert status == 502, body
    assert conversations(client) == before, "a failed response was kept"


# --- hostile tool calls from the upstream ----------------------------------------------


def odd_tool_call(function: Any) -> Any:
    async def behave(request: web.Request) -> web.StreamResponse:
        body = completion_body("")
        body["choices"][0]["message"] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": function}],
        }
        return web.json_response(body)

    return behave


def odd_tool_stream(fragment: dict[str, Any]) -> Any:
    async def behave(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for delta in ({"content": "x"}, {"tool_calls": [fragment]}):
            event = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    return behave


@pytest.mark.parametrize("function", ["lookup", 5, ["a"]])
async def test_a_hostile_tool_call_is_a_502(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI, function: Any
) -> None:
    client = await app_with_history(aiohttp_client, fake_openai)
    fake_openai.queue(odd_tool_call(function))
    status, body = await post(client, model="gpt-4o", input="hi", tools=[FUNCTION])
    assert status == 502, body
    assert body["error"]["type"].startswith("upstream_"), body


@pytest.mark.parametrize(
    "fragment",
    [
        {"index": "zero", "function": {"name": "f", "arguments": "{}"}},
        {"index": 1e300, "function": {"name": "f", "arguments": "{}"}},
        {"index": 0, "function": "f"},
        {"index": 0, "function": {"name": ["f"], "arguments": {"a": 1}}},
    ],
)
async def test_a_hostile_streamed_tool_call_ends_failed(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI, fragment: dict[str, Any]
) -> None:
    client = await app_with_history(aiohttp_client, fake_openai)
    fake_openai.queue(odd_tool_stream(fragment))
    resp = await client.post(
        "/v1/responses",
        json={"model": "gpt-4o", "input": "hi", "stream": True, "tools": [FUNCTION]},
    )
    events = check_response_events(await resp.read())
    assert events[-1]["type"] == "response.failed", events[-2:]
    assert events[-2]["code"].startswith("upstream_"), events[-2]
    assert await has_conversation(client, events[0]["response"]["id"]) is None


# --- model routing --------------------------------------------------------------------


async def test_nope_is_model_not_found_on_responses(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    client = await app_with_history(aiohttp_client, fake_openai)
    for stream in (False, True):
        status, body = await post(client, model="nope/x", input="hi", stream=stream)
        assert status == 404 and body["error"]["code"] == "model_not_found", body
        assert body["error"]["param"] == "model"
    assert not fake_openai.requests


async def test_a_slashed_model_a_provider_serves_is_retrievable(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    """vLLM's `meta-llama/...`: chat reaches it by that name, so retrieve must find it."""
    client = await serve(aiohttp_client, openai_settings(fake_openai, openai_model="org/m-1"))
    status, _ = await post(client, "/v1/chat/completions", model="org/m-1", messages=[USER])
    assert status == 200
    resp = await client.get("/v1/models/org%2Fm-1")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["id"] == "chatgpt/org/m-1"
    missing = await client.get("/v1/models/org%2Fnope")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "model_not_found"


@dataclass
class VllmEmbeddings(EmbeddingOpenAI):
    """An OpenAI-compatible server whose models are named `org/model`, as vLLM's are."""

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": name, "object": "model"} for name in ("BAAI/bge-m3", "org/chat")]
        return web.json_response({"object": "list", "data": data})


async def test_a_slashed_embedding_model_a_provider_serves_is_routed_to_it(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    fake = VllmEmbeddings()
    server = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("/v1"))
    client = await serve(aiohttp_client, openai_settings(fake))
    status, body = await post(client, "/v1/embeddings", model="BAAI/bge-m3", input="x")
    assert status == 200, body
    assert fake.embedding_calls[-1]["model"] == "BAAI/bge-m3"
    assert body["data"][0]["embedding"] == fake_vector("x")
    status, body = await post(client, "/v1/embeddings", model="nope/x", input="x")
    assert status == 404 and body["error"]["code"] == "model_not_found", body


# --- embeddings: what goes out is exact ------------------------------------------------


async def test_base64_of_a_float_beyond_float32_is_a_502(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    """float32 holds no 1e39: packing it would hand the client an infinity."""
    fake = EmbeddingOpenAI(encoding="float")
    server = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("/v1"))
    client = await serve(aiohttp_client, openai_settings(fake))
    fake.vector_override = [1e39] * 8
    status, body = await post(
        client,
        "/v1/embeddings",
        model="text-embedding-3-small",
        input="x",
        encoding_format="base64",
    )
    assert status == 502, body
    fake.vector_override = [0.1, -2.5, 3.0, 1e-3, 0.0, -0.0, 7.25, 1.0]
    status, body = await post(
        client,
        "/v1/embeddings",
        model="text-embedding-3-small",
        input="x",
        encoding_format="base64",
    )
    assert status == 200, body
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert raw == struct.pack("<8f", *fake.vector_override)


async def test_dimensions_the_upstream_ignored_are_a_502(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    fake = EmbeddingOpenAI()
    server = await aiohttp_server(fake.app())
    fake.base_url = str(server.make_url("/v1"))
    client = await serve(aiohttp_client, openai_settings(fake))
    fake.vector_override = [0.5] * 3
    status, body = await post(
        client, "/v1/embeddings", model="text-embedding-3-small", input="x", dimensions=4
    )
    assert status == 502, body
