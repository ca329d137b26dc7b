"""What a hostile client or upstream, or an SDK user off the happy path, finds in
`/v1/responses`, `/v1/embeddings` and `/v1/models/{id}`: each case was a bug once."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from chatproxy.embeddings.base import Ask, Embedded, Input, Limits, embed_all, vector_size
from chatproxy.errors import UpstreamResponseError
from chatproxy.history.base import StoredMessage, utc_now
from chatproxy.history.layer import scoped
from chatproxy.keys import HISTORY
from tests.conftest import (
    AiohttpClient,
    AiohttpServer,
    Client,
    ernie_settings,
    make_settings,
    openai_settings,
    serve,
    started,
)
from tests.fakes.embeddings import EmbeddingErnie, EmbeddingOpenAI, fake_vector
from tests.fakes.openai_server import (
    FakeOpenAI,
    completion_body,
    reply,
    stream,
    tool_call_reply,
)
from tests.history_stores import STORE_URLS, app_postgres, store_url
from tests.test_fault_matrix_openai_surface import check_response_events

__all__ = ["app_postgres"]  # a fixture, used by name
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
    """The `<id>:calls` record is read defensively: one the store holds in another shape
    (written by an older chatproxy, or by hand) is ignored, not a 500."""
    client = await app_with_history(aiohttp_client, fake_openai)
    fake_openai.queue(tool_call_reply("lookup", '{"q":"x"}'))
    _, first = await post(client, model="gpt-4o", input="hi", tools=[FUNCTION])
    history = client.app[HISTORY]
    corrupt = [StoredMessage("assistant", "not json [", utc_now())]
    record = scoped(f"{first['id']}:calls", "")
    assert await history.store.append_turn(record, "", corrupt)
    status, body = await post(
        client,
        model="gpt-4o",
        previous_response_id=first["id"],
        input=[{"type": "function_call_output", "call_id": "call_abc123", "output": "42"}],
    )
    assert status != 500, body


@pytest.mark.parametrize("suffix", ["", ":calls"])
@pytest.mark.parametrize("where", ["body", "header"])
async def test_a_chat_request_cannot_write_into_a_stored_response(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI, suffix: str, where: str
) -> None:
    """Responses live in the conversation store under ids chatproxy makes; a chat request
    naming one (or its calls record) would append to that response's chain."""
    client = await app_with_history(aiohttp_client, fake_openai)
    _, first = await post(client, model="gpt-4o", input="hi")
    named = f"{first['id']}{suffix}"
    extra: dict[str, Any] = {"conversation_id": named} if where == "body" else {}
    headers = {"X-Conversation-ID": named} if where == "header" else {}
    for path in ("/v1/chat/completions", "/chatgpt/"):
        resp = await client.post(path, json={"messages": [USER], **extra}, headers=headers)
        assert resp.status == 400, await resp.text()
        assert "previous_response_id" in await resp.text()
    kept = await client.get(f"/v1/responses/{first['id']}")
    assert kept.status == 200
    assert len((await kept.json())["output"]) == 1


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
    for streamed in (False, True):
        status, body = await post(client, model="nope/x", input="hi", stream=streamed)
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


async def test_a_client_that_leaves_mid_stream_leaves_nothing_behind(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    client = await app_with_history(aiohttp_client, fake_openai)
    fake_openai.queue(stream(["one ", "two"], stall_after=1))
    resp = await client.post(
        "/v1/responses", json={"model": "gpt-4o", "input": "q", "stream": True}
    )
    seen = b""
    while b"response.output_text.delta" not in seen:
        seen += await resp.content.readany()
    response_id = json.loads(seen.split(b"data: ", 1)[1].split(b"\n", 1)[0])["response"]["id"]
    assert await has_conversation(client, response_id) is not None, "made before the call"
    resp.close()
    for _ in range(100):
        if await has_conversation(client, response_id) is None:
            break
        await asyncio.sleep(0.02)
    assert await has_conversation(client, response_id) is None, "a response nobody got was kept"


async def test_an_ernie_embedding_model_stays_one_path_segment(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    fake = EmbeddingErnie()
    await started(aiohttp_server, fake)
    client = await serve(aiohttp_client, make_settings(**ernie_settings(fake)))
    for model in ("ernie/../chat/x", "ernie/a/b", "ernie/.hidden", "ernie/a%2F..", "ernie/a?x=1"):
        status, body = await post(client, "/v1/embeddings", model=model, input="x")
        assert status in (400, 404), (model, body)
    status, body = await post(client, "/v1/embeddings", model="ernie/my_endpoint-1.2", input="x")
    assert status == 200, body
    assert [endpoint for endpoint, _ in fake.embedding_calls] == ["my_endpoint-1.2"]


@dataclass
class OneBatchFails:
    """Batches of one; the first fails at once, the others wait for an answer never sent."""

    provider: str = "stub"
    takes_tokens: bool = False
    takes_dimensions: bool = False
    cancelled: int = 0

    def limits(self, model: str) -> Limits:
        return Limits(max_batch=1)

    async def embed(self, inputs: Sequence[Input], ask: Ask) -> Embedded:
        if inputs[0] == "first":
            raise UpstreamResponseError("stub failed")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return Embedded([[1.0]], 1)


async def test_a_failed_batch_stops_the_others() -> None:
    stub = OneBatchFails()
    with pytest.raises(UpstreamResponseError):
        await embed_all(stub, ["first", "second", "third"], Ask("m"))
    await asyncio.sleep(0)
    assert stub.cancelled == 2, "batches nobody will read went on"


@pytest.mark.parametrize("size", range(1, 9))
def test_a_base64_vectors_length_is_its_float32_count(size: int) -> None:
    """Every padding base64 has (0, 1 or 2 `=`) counts the same as the vector it packs."""
    encoded = base64.b64encode(struct.pack(f"<{size}f", *[0.5] * size)).decode()
    assert vector_size(encoded) == size


@pytest.mark.local
async def test_local_mean_pooling_does_not_overflow_half_precision(tmp_path: Any) -> None:
    """float16 tops out at 65504: summing a long input's hidden states in it gave an
    infinity, which the answer wrote as `Infinity`, and no JSON parser reads that."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import torch

    from chatproxy.local.embeddings import LocalEmbeddingModel
    from tests.tiny_models import build_model

    folder = build_model(tmp_path / "tiny", "qwen2", context=64)
    model = LocalEmbeddingModel(str(folder), device="cpu", dtype="float16", max_batch=2)
    model.start()
    try:
        for _ in range(300):
            if model.not_ready_reason() is None:
                break
            await asyncio.sleep(0.1)
        assert model.not_ready_reason() is None, model.not_ready_reason()
        with torch.no_grad():  # hidden states in the thousands: a sum of 40 passes 65504
            model._loaded().model.norm.weight.fill_(3000.0)
        vectors, _ = await model.embed(["hello world " * 12])
    finally:
        model.stop()
    finite = [value for value in vectors[0] if abs(value) < float("inf")]
    assert len(finite) == len(vectors[0]), "an infinity or NaN in a pooled vector"


@pytest.mark.local
async def test_a_local_pass_that_fails_is_a_503(tmp_path: Any) -> None:
    """torch failing (out of memory, say) is the service being unable, not a 500."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from chatproxy.errors import ServiceUnavailableError
    from chatproxy.local.embeddings import LocalEmbeddingModel
    from tests.tiny_models import build_model

    folder = build_model(tmp_path / "tiny", "qwen2", context=64)
    model = LocalEmbeddingModel(str(folder), device="cpu", dtype="float32", max_batch=2)
    model.start()

    def out_of_memory(**_: Any) -> Any:
        raise RuntimeError("CUDA out of memory")

    try:
        for _ in range(300):
            if model.not_ready_reason() is None:
                break
            await asyncio.sleep(0.1)
        model._loaded().model = out_of_memory
        with pytest.raises(ServiceUnavailableError):
            await model.embed(["hello"])
    finally:
        model.stop()


def text_then_call() -> Any:
    async def behave(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        first = {"index": 0, "id": "call_9", "function": {"name": "lookup", "arguments": '{"q"'}}
        deltas: list[dict[str, Any]] = [
            {"content": "Let me "},
            {"content": "check."},
            {"tool_calls": [first]},
            {"tool_calls": [{"index": 0, "function": {"arguments": ':"x"}'}}]},
        ]
        for delta in deltas:
            event = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    return behave


async def test_streamed_indexes_agree_with_the_final_response(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    client = await app_with_history(aiohttp_client, fake_openai)
    fake_openai.queue(text_then_call())
    resp = await client.post(
        "/v1/responses",
        json={"model": "gpt-4o", "input": "hi", "stream": True, "tools": [FUNCTION]},
    )
    events = check_response_events(await resp.read())
    added: list[int] = []
    done: dict[int, Any] = {}
    texts: dict[int, str] = {}
    arguments: dict[int, str] = {}
    for event in events:
        index = event.get("output_index")
        kind = event["type"]
        if kind == "response.output_item.added":
            assert index == len(added), "items are added in output order"
            added.append(index)
            continue
        if index is None:
            continue
        assert index in added and index not in done, (kind, index)
        if "content_index" in event:
            assert event["content_index"] == 0, event
        if kind == "response.output_text.delta":
            texts[index] = texts.get(index, "") + event["delta"]
        elif kind == "response.output_text.done":
            assert event["text"] == texts[index]
        elif kind == "response.function_call_arguments.delta":
            arguments[index] = arguments.get(index, "") + event["delta"]
        elif kind == "response.function_call_arguments.done":
            assert event["arguments"] == arguments[index]
        elif kind == "response.output_item.done":
            done[index] = event["item"]
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert final["output"] == [done[i] for i in range(len(added))]
    assert texts == {0: "Let me check."} and arguments == {1: '{"q":"x"}'}


async def test_a_model_the_upstream_does_not_know_is_blamed_on_model(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI
) -> None:
    """The plain fake answers 404 to /embeddings, as OpenAI does to a chat model there."""
    client = await serve(aiohttp_client, openai_settings(fake_openai))
    status, body = await post(client, "/v1/embeddings", model="chatgpt/gpt-4o", input="x")
    assert status == 400 and body["error"]["param"] == "model", body


@pytest.mark.parametrize("kind", STORE_URLS)
async def test_every_store_reads_continues_and_forgets(
    aiohttp_client: AiohttpClient,
    fake_openai: FakeOpenAI,
    app_postgres: str,
    tmp_path: Path,
    kind: str,
) -> None:
    """Timestamps decide what GET shows: each store must keep them fine enough."""
    url = store_url(kind, tmp_path, app_postgres)
    settings = openai_settings(
        fake_openai, history_store=url, system_prompt_mode="off", upstream_retries=0
    )
    client = await serve(aiohttp_client, settings)
    fake_openai.queue(reply("one"), reply("two"), failing())
    _, first = await post(client, model="gpt-4o", input="q1")
    _, second = await post(client, model="gpt-4o", input="q2", previous_response_id=first["id"])
    got = await client.get(f"/v1/responses/{second['id']}")
    assert got.status == 200, await got.text()
    assert (await got.json())["output"][0]["content"][0]["text"] == "two"
    assert [m["content"] for m in fake_openai.requests[1]["messages"]] == ["q1", "one", "q2"]
    resp = await client.post(
        "/v1/responses",
        json={"model": "gpt-4o", "input": "q3", "previous_response_id": second["id"]},
    )
    assert resp.status == 502
    assert (await client.delete(f"/v1/responses/{second['id']}")).status == 200
    assert (await client.get(f"/v1/responses/{second['id']}")).status == 404
    assert (await client.get(f"/v1/responses/{first['id']}")).status == 200
