"""The fault matrix for the rest of the OpenAI surface: `/v1/embeddings` and
`/v1/responses` (plain and streamed) against every hostile upstream answer.

The faulty fake (tests/fakes/faulty.py) is reused as it is: its chat faults answer the
chat calls `/v1/responses` makes, and the same faults, plus hostile embedding bodies
(NaN, wrong types, wrong counts and lengths, indexes out of range), answer its embedding
endpoints, which a middleware adds here. Every case must be a clear error in OpenAI's
envelope (a 502 for a broken answer), within the timeout, with no secret in it, never a
500 of chatproxy's own; and the next request on the same app must succeed.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pydantic
import pytest
from aiohttp import web
from openai.types.responses import Response, ResponseStreamEvent

from tests.conftest import AiohttpClient, AiohttpServer, Client, make_settings, serve, started
from tests.fakes.faulty import CHAT_PREFIX, FAULTS, OPENAI_KEY, REPLY, Exchange, misbehave
from tests.fakes.faulty import FaultyUpstream as _FaultyUpstream
from tests.test_fault_matrix import (
    MODELS,
    PROVIDERS,
    SLACK,
    TIMEOUT,
    Answer,
    Gate,
    check_error,
    events_of,
    expect,
    leaks,
    settings_for,
)

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
EMBEDDINGS_PREFIX = CHAT_PREFIX.removesuffix("/chat") + "/embeddings/"
INPUTS = ["hello world", "second input"]
SIZE = 4

# Hostile embedding bodies, all at HTTP 200: each must be a 502, never passed on.
HOSTILE = (
    "nan", "infinity", "overflow", "str_floats", "null_vector", "ragged", "empty_vectors",
    "count_short", "count_long", "index_out_of_range", "index_duplicate", "index_negative",
    "index_overflow", "index_str", "data_dict", "data_empty", "not_object", "bad_base64",
    "base64_partial", "usage_overflow", "usage_negative",
)  # fmt: skip


def good_vector(i: int) -> list[float]:
    return [float(i + 1), 0.5, -0.25, 2.0][:SIZE]


def hostile_body(kind: str, count: int) -> bytes:
    """Raw bytes: NaN and Infinity are not JSON, and `json.dumps` would not write them."""
    items: list[dict[str, Any]] = [
        {"object": "embedding", "index": i, "embedding": good_vector(i)} for i in range(count)
    ]
    usage: Any = {"prompt_tokens": 4, "total_tokens": 4}
    marker: str | None = None
    if kind in ("nan", "infinity", "overflow"):
        marker = {"nan": "NaN", "infinity": "Infinity", "overflow": "1e999"}[kind]
        items[0]["embedding"] = [0.5, "MARKER", 0.5, 0.5]
    elif kind == "str_floats":
        items[0]["embedding"] = ["a", "b", "c", "d"]
    elif kind == "null_vector":
        items[0]["embedding"] = None
    elif kind == "ragged":
        items[-1]["embedding"] = [1.0, 2.0]
    elif kind == "empty_vectors":
        for item in items:
            item["embedding"] = []
    elif kind == "count_short":
        items = items[:-1]
    elif kind == "count_long":
        items.append({"object": "embedding", "index": count, "embedding": good_vector(0)})
    elif kind == "index_out_of_range":
        items[-1]["index"] = count + 5
    elif kind == "index_duplicate":
        items[-1]["index"] = 0
    elif kind == "index_negative":
        items[0]["index"] = -1
    elif kind == "index_overflow":
        marker = "1e999"
        items[0]["index"] = "MARKER"
    elif kind == "index_str":
        items[0]["index"] = "zero"
    elif kind == "bad_base64":
        items[0]["embedding"] = "!!! not base64 at all !!!"
    elif kind == "base64_partial":
        items[0]["embedding"] = "AAAAAAA="  # five bytes: not whole float32s
    elif kind == "usage_overflow":
        marker = "1e999"
        usage = {"prompt_tokens": "MARKER", "total_tokens": "MARKER"}
        for item in items:
            item["usage"] = {"prompt_tokens": "MARKER"}  # GigaChat counts per input
    elif kind == "usage_negative":
        usage = {"prompt_tokens": -5, "total_tokens": -5}
        for item in items:
            item["usage"] = {"prompt_tokens": -5}
    data: Any = items
    if kind == "data_dict":
        data = {str(item["index"]): item for item in items}
    elif kind == "data_empty":
        data = []
    body: Any = {"object": "list", "data": data, "model": "m", "usage": usage}
    if kind == "not_object":
        body = [1, 2]
    text = json.dumps(body)
    if marker is not None:
        text = text.replace('"MARKER"', marker)
    return text.encode()


def embedding_body(inputs: list[Any], encoding: str) -> bytes:
    """A good answer, in the format asked for (base64: little-endian float32)."""
    data = []
    for i, _ in enumerate(inputs):
        vector: Any = good_vector(i)
        if encoding == "base64":
            vector = base64.b64encode(struct.pack(f"<{SIZE}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    usage = {"prompt_tokens": 4, "total_tokens": 4}
    return json.dumps({"object": "list", "data": data, "model": "m", "usage": usage}).encode()


@dataclass
class FaultyUpstream(_FaultyUpstream):
    """The faulty fake, with its providers' embedding endpoints in front of its routes."""

    hostile: str | None = None
    embedding_calls: int = 0
    embedding_paths: list[str] = field(default_factory=list)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse | None:
        path = request.path
        if path == "/v1/embeddings":
            dialect, credential = "openai", self._bearer(request)
            if credential != OPENAI_KEY:
                return web.json_response({"error": {"message": "bad key"}}, status=401)
        elif path == "/api/v1/embeddings":
            dialect, credential = "gigachat", self._bearer(request)
            if not self._valid(credential):
                return web.json_response({"status": 401, "message": "Unauthorized"}, status=401)
        elif path.startswith(EMBEDDINGS_PREFIX):
            dialect, credential = "ernie", request.query.get("access_token", "")
            if not self._valid(credential):
                return web.json_response({"error_code": 110, "error_msg": "Access token invalid"})
        else:
            return None
        self.embedding_calls += 1
        self.embedding_paths.append(request.rel_url.raw_path)
        body = await request.json()
        if self.fault is not None and self.fault != "refused":
            return await misbehave(self.fault, Exchange(request, dialect, False, credential))
        if self.hostile is not None:
            raw = hostile_body(self.hostile, len(body["input"]))
            return web.Response(body=raw, content_type="application/json")
        encoding = body.get("encoding_format", "float")
        raw = embedding_body(body["input"], encoding)
        return web.Response(body=raw, content_type="application/json")

    @web.middleware
    async def embeddings_first(self, request: web.Request, handler: Any) -> web.StreamResponse:
        answered = await self._embeddings(request)
        if answered is not None:
            return answered
        response: web.StreamResponse = await handler(request)
        return response

    def app(self) -> web.Application:
        app = super().app()
        app.middlewares.append(self.embeddings_first)
        return app


def embedding_model(provider: str) -> str:
    return {"chatgpt": "text-embedding-3-small", "gigachat": "Embeddings"}.get(
        provider, "embedding-v1"
    )


async def post(client: Client, path: str, body: dict[str, Any]) -> Answer:
    started_at = time.monotonic()
    resp = await client.post(path, json=body, timeout=aiohttp.ClientTimeout(total=20))
    raw = await resp.read()
    return Answer(resp, raw, time.monotonic() - started_at)


async def ask_embeddings(client: Client, provider: str, encoding: str = "float") -> Answer:
    body = {"model": f"{provider}/{embedding_model(provider)}", "input": INPUTS}
    if encoding != "float":
        body["encoding_format"] = encoding
    return await post(client, "/v1/embeddings", body)


async def ask_responses(client: Client, provider: str, stream: bool) -> Answer:
    body = {"model": f"{provider}/{MODELS[provider]}", "input": "hi", "stream": stream}
    return await post(client, "/v1/responses", body)


def applies(fault: str, provider: str) -> bool:
    """As in the chat matrix, for a plain call (a stream's faults are chat's own)."""
    if fault.startswith("ernie_"):
        return provider == "ernie"
    return fault != "json_error_200"


async def app_for(
    aiohttp_client: AiohttpClient, fake: FaultyUpstream, provider: str, chat_base: str
) -> Client:
    settings = make_settings(**settings_for(provider, chat_base, fake.base))
    return await serve(aiohttp_client, settings)


# --- /v1/embeddings x every chat fault -------------------------------------------------


EMBEDDING_CASES = [
    pytest.param(provider, fault, id=f"{provider}-{fault}")
    for fault in FAULTS
    for provider in PROVIDERS
    if applies(fault, provider)
]


@pytest.mark.parametrize(("provider", "fault"), EMBEDDING_CASES)
async def test_embeddings_fault(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, provider: str, fault: str
) -> None:
    fake = await started(aiohttp_server, FaultyUpstream())
    gate = Gate() if fault == "refused" else None
    try:
        client = await app_for(aiohttp_client, fake, provider, gate.base if gate else fake.base)
        fake.fault = fault
        answer = await ask_embeddings(client, provider)
        want = expect(fault, False)
        assert not leaks(answer, fake), f"secrets leaked: {answer.show()}"
        check_error(answer, "v1", want)
        assert answer.elapsed < TIMEOUT + SLACK, f"took {answer.elapsed:.2f}s"
        if want.retried:
            assert fake.embedding_calls == 2, f"{fake.embedding_calls} calls; 5xx/429 retry once"

        fake.fault = None
        if gate is not None:
            await gate.open(fake.app())
        await check_embeddings_recover(client, provider, fake)
    finally:
        if gate is not None:
            await gate.close()


async def check_embeddings_recover(client: Client, provider: str, fake: FaultyUpstream) -> None:
    answer = await ask_embeddings(client, provider)
    assert answer.resp.status == 200, f"no recovery after the fault: {answer.show()}"
    data = json.loads(answer.raw)["data"]
    assert [item["embedding"] for item in data] == [good_vector(0), good_vector(1)]
    assert not leaks(answer, fake)


# --- /v1/embeddings x hostile embedding bodies -----------------------------------------


HOSTILE_CASES = [
    pytest.param(provider, kind, encoding, id=f"{provider}-{kind}-{encoding}")
    for kind in HOSTILE
    for provider in PROVIDERS
    for encoding in ("float", "base64")
]


@pytest.mark.parametrize(("provider", "kind", "encoding"), HOSTILE_CASES)
async def test_embeddings_hostile_body(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    provider: str,
    kind: str,
    encoding: str,
) -> None:
    fake = await started(aiohttp_server, FaultyUpstream())
    client = await app_for(aiohttp_client, fake, provider, fake.base)
    fake.hostile = kind
    answer = await ask_embeddings(client, provider, encoding)
    assert not leaks(answer, fake), f"secrets leaked: {answer.show()}"
    assert answer.resp.status == 502, f"wanted a 502: {answer.show()}"
    payload = json.loads(answer.raw)  # strict: no NaN may reach the client either
    assert payload["error"]["type"].startswith("upstream_"), answer.show()
    assert answer.elapsed < TIMEOUT + SLACK, f"took {answer.elapsed:.2f}s"

    fake.hostile = None
    await check_embeddings_recover(client, provider, fake)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_embeddings_answer_is_strict_json(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, provider: str
) -> None:
    """A good answer, both encodings, parsed by a parser that refuses NaN."""
    fake = await started(aiohttp_server, FaultyUpstream())
    client = await app_for(aiohttp_client, fake, provider, fake.base)
    for encoding in ("float", "base64"):
        answer = await ask_embeddings(client, provider, encoding)
        assert answer.resp.status == 200, answer.show()

        def refuse(value: str) -> float:
            raise AssertionError(f"non-JSON number {value}")

        body = json.loads(answer.raw, parse_constant=refuse)
        assert [item["index"] for item in body["data"]] == [0, 1]


# --- /v1/responses, plain and streamed, x every chat fault -----------------------------


def responses_applies(fault: str, provider: str, stream: bool) -> bool:
    if fault.startswith("ernie_"):
        return provider == "ernie"
    return stream or fault != "json_error_200"


RESPONSES_CASES = [
    pytest.param(provider, stream, fault, id=f"{provider}-{mode}-{fault}")
    for fault in FAULTS
    for provider in PROVIDERS
    for stream, mode in ((False, "plain"), (True, "stream"))
    if responses_applies(fault, provider, stream)
]


def check_response_events(raw: bytes) -> list[dict[str, Any]]:
    """Every event an SDK type, named as its `type`, numbered 0, 1, 2, ..."""
    events = events_of(raw)
    for name, data in events:
        assert isinstance(data, dict), (name, data)
        assert data.get("type") == name, (name, data)
        EVENTS.validate_python(data)
    numbers = [data["sequence_number"] for _, data in events]
    assert numbers == list(range(len(events))), numbers
    return [data for _, data in events]


def check_failed_stream(answer: Answer) -> None:
    assert answer.resp.status == 200, f"wanted a stream that ends failed: {answer.show()}"
    events = check_response_events(answer.raw)
    kinds = [event["type"] for event in events]
    assert kinds[-2:] == ["error", "response.failed"], kinds
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert "response.completed" not in kinds, kinds
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"], failed
    assert events[-2]["message"] == failed["error"]["message"]
    assert events[-2]["code"] != "internal_error", events[-2]


@pytest.mark.parametrize(("provider", "stream", "fault"), RESPONSES_CASES)
async def test_responses_fault(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    provider: str,
    stream: bool,
    fault: str,
) -> None:
    fake = await started(aiohttp_server, FaultyUpstream())
    gate = Gate() if fault == "refused" else None
    try:
        client = await app_for(aiohttp_client, fake, provider, gate.base if gate else fake.base)
        fake.fault = fault
        answer = await ask_responses(client, provider, stream)
        want = expect(fault, stream)
        assert not leaks(answer, fake), f"secrets leaked: {answer.show()}"
        assert answer.resp.status != 500, answer.show()
        if want.status == 200:
            check_failed_stream(answer)
            if want.message is not None:
                assert want.message in answer.raw.decode(), answer.show()
        else:
            check_error(answer, "v1", want)
        assert answer.elapsed < TIMEOUT + SLACK, f"took {answer.elapsed:.2f}s"
        if want.retried:
            assert fake.chat_calls == 2, f"{fake.chat_calls} chat calls; 5xx/429 are retried once"

        fake.fault = None
        if gate is not None:
            await gate.open(fake.app())
        answer = await ask_responses(client, provider, stream)
        assert answer.resp.status == 200, f"no recovery after the fault: {answer.show()}"
        if stream:
            events = check_response_events(answer.raw)
            assert events[-1]["type"] == "response.completed", events[-1]
            final = events[-1]["response"]
        else:
            final = json.loads(answer.raw)
        Response.model_validate(final)
        assert final["output"][0]["content"][0]["text"] == REPLY
        assert not leaks(answer, fake)
    finally:
        if gate is not None:
            await gate.close()
