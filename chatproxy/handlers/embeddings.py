"""`POST /v1/embeddings`, in OpenAI's request and response shapes, for every provider."""

from __future__ import annotations

import base64
import math
import sys
from array import array
from contextlib import nullcontext

import pydantic_core
from aiohttp import web

from chatproxy.embeddings.base import Ask, Encoding, Input, Vector, embed_all, float32s
from chatproxy.embeddings.registry import embedder_for, route_embedding_model
from chatproxy.errors import InvalidRequestError, UpstreamResponseError
from chatproxy.handlers.common import parse_body
from chatproxy.keys import LIMITS, PROVIDERS, SETTINGS
from chatproxy.logs import request_id_var
from chatproxy.metrics.exchange import upstream_call
from chatproxy.openai_schemas import EmbeddingRequest
from chatproxy.schemas import Usage

# OpenAI's own cap on inputs in one request.
MAX_INPUTS = 2048


def as_inputs(value: str | list[str] | list[int] | list[list[int]]) -> list[Input]:
    """One input or many, as a list: a flat list of ints is one input of token ids."""
    if isinstance(value, str):
        return [value]
    if not value:
        raise InvalidRequestError("input: give at least one input", param="input")
    if all(isinstance(item, int) for item in value):
        return [[item for item in value if isinstance(item, int)]]
    inputs: list[Input] = [item for item in value if not isinstance(item, int)]
    if len(inputs) > MAX_INPUTS:
        raise InvalidRequestError(
            f"input: at most {MAX_INPUTS} inputs in one request, got {len(inputs)}", param="input"
        )
    return inputs


def base64_floats(vector: list[float]) -> str:
    """OpenAI's `base64`: the vector as little-endian float32 bytes."""
    packed = array("f", vector)
    # A finite double beyond float32's range packs as an infinity; no model makes one.
    if not math.isfinite(sum(packed)):
        raise UpstreamResponseError("the upstream sent an embedding beyond float32's range")
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def floats_of(encoded: str) -> list[float]:
    """An upstream's base64 vector as floats; parse_data has checked it is whole float32s."""
    return float32s(base64.b64decode(encoded)).tolist()


def encoded(vector: Vector, encoding: Encoding) -> Vector:
    """A vector in the client's format, whichever the upstream answered in."""
    if encoding == "base64":
        return vector if isinstance(vector, str) else base64_floats(vector)
    return floats_of(vector) if isinstance(vector, str) else vector


async def create_embeddings(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await parse_body(request, EmbeddingRequest, settings.max_body_bytes)
    inputs = as_inputs(body.input)
    provider, model = await route_embedding_model(body.model, settings, request.app[PROVIDERS])
    embedder = embedder_for(request.app, provider)
    ask = Ask(model, body.dimensions, body.encoding_format, request_id_var.get())
    # The same budgets and concurrency caps as a chat turn (chatproxy.limits).
    limits = request.app.get(LIMITS)
    quota = None if limits is None else await limits.admit()
    tracked = nullcontext() if limits is None else limits.track(request.app[PROVIDERS], provider)
    # upstream_call: /metrics and Server-Timing name the provider, model, time and tokens.
    with tracked, upstream_call(provider, model) as call:
        embedded = await embed_all(embedder, inputs, ask)
    call.usage = Usage(embedded.prompt_tokens, 0, embedded.prompt_tokens)
    if quota is not None:
        await quota.spend(embedded.prompt_tokens)
    answer = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encoded(v, ask.encoding)}
            for i, v in enumerate(embedded.vectors)
        ],
        "model": body.model,
        "usage": {"prompt_tokens": embedded.prompt_tokens, "total_tokens": embedded.prompt_tokens},
    }
    return web.Response(body=pydantic_core.to_json(answer), content_type="application/json")
