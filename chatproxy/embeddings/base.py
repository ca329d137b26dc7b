"""What every embedding provider implements, and the splitting into its batch size."""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, TypeAdapter, ValidationError

from chatproxy.clients.http import error_text
from chatproxy.errors import (
    InvalidRequestError,
    UpstreamBadRequestError,
    UpstreamError,
    UpstreamResponseError,
)

# One input: text, or (for an OpenAI-compatible upstream) token ids.
Input = str | list[int]
# One vector: floats, or OpenAI's base64 of little-endian float32 as an upstream sent it.
Vector = list[float] | str
Encoding = Literal["float", "base64"]
# Checks an upstream's vector in Rust: a third of a Python loop's cost over 1536 floats.
# NaN and infinities are refused: the JSON parser takes them, but they are not JSON, and
# the client's parser would choke on the answer they made.
_FLOATS = TypeAdapter(list[Annotated[float, Field(allow_inf_nan=False)]])
# Batches of one request sent upstream at once; more wait their turn.
CONCURRENT_BATCHES = 4


@dataclass(slots=True)
class Embedded:
    vectors: list[Vector]
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Ask:
    """What every batch of one request asks for."""

    model: str
    dimensions: int | None = None
    # What the client wants back: an upstream that can answer so saves a conversion.
    encoding: Encoding = "float"
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """A provider's documented input limits for one model."""

    max_batch: int  # inputs in one upstream call
    max_chars: int | None = None  # characters in one input, where the provider counts them


class Embedder(Protocol):
    provider: str
    takes_tokens: bool  # token-id inputs, not only text
    takes_dimensions: bool

    def limits(self, model: str) -> Limits: ...

    async def embed(self, inputs: Sequence[Input], ask: Ask) -> Embedded: ...


def check_inputs(embedder: Embedder, inputs: Sequence[Input], model: str, limits: Limits) -> None:
    """Refuse, naming the input, what the provider would refuse: a 400 before any call."""
    for index, item in enumerate(inputs):
        where = f"input.{index}" if len(inputs) > 1 else "input"
        if isinstance(item, list):
            if not embedder.takes_tokens:
                raise InvalidRequestError(
                    f"{where}: provider '{embedder.provider}' takes text only, not token ids",
                    param="input",
                )
            if not item:
                raise InvalidRequestError(f"{where}: an empty token array", param="input")
            continue
        if not item.strip():
            raise InvalidRequestError(f"{where}: an empty string cannot be embedded", param="input")
        if limits.max_chars is not None and len(item) > limits.max_chars:
            raise InvalidRequestError(
                f"{where} is {len(item)} characters; {embedder.provider} model '{model}' takes "
                f"at most {limits.max_chars} per input",
                param="input",
            )


async def embed_all(embedder: Embedder, inputs: Sequence[Input], ask: Ask) -> Embedded:
    """All inputs' vectors in order, in as many upstream calls as the batch limit needs."""
    limits = embedder.limits(ask.model)
    check_inputs(embedder, inputs, ask.model, limits)
    if ask.dimensions is not None and not embedder.takes_dimensions:
        raise InvalidRequestError(
            f"dimensions is not supported by provider '{embedder.provider}'", param="dimensions"
        )
    step = limits.max_batch
    batches = [inputs[i : i + step] for i in range(0, len(inputs), step)]
    gate = asyncio.Semaphore(CONCURRENT_BATCHES)

    async def one(batch: Sequence[Input]) -> Embedded:
        async with gate:
            try:
                done = await embedder.embed(batch, ask)
            except UpstreamBadRequestError as exc:
                # A 404 is the upstream not knowing the model (OpenAI's model_not_found);
                # any other refusal is of the inputs.
                exc.param = exc.param or ("model" if exc.upstream_status == 404 else "input")
                raise
        if len(done.vectors) != len(batch):
            raise UpstreamResponseError(
                f"{embedder.provider} returned {len(done.vectors)} embeddings for "
                f"{len(batch)} inputs"
            )
        return done

    tasks = [asyncio.ensure_future(one(batch)) for batch in batches]
    try:
        results = await asyncio.gather(*tasks)
    finally:
        # One batch failed (or the client left): the answer is lost, so are the others'.
        for task in tasks:
            task.cancel()
    vectors = [vector for result in results for vector in result.vectors]
    # Batches answered alike, and as long as asked: a mix is no use to the client.
    check_sizes(vectors, embedder.provider, ask.dimensions)
    return Embedded(vectors, sum(result.prompt_tokens for result in results))


def _size_of_base64(encoded: str) -> int:
    """The float32s in a base64 vector that is already known to be well formed."""
    return (len(encoded) * 3 // 4 - encoded[-2:].count("=")) // 4


def vector_size(vector: Vector) -> int:
    return _size_of_base64(vector) if isinstance(vector, str) else len(vector)


def float32s(raw: bytes) -> array[float]:
    """OpenAI's base64 payload, decoded: little-endian float32s, whatever this machine's
    byte order."""
    packed = array("f", raw)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed


def _base64_vector(value: str) -> str:
    """An upstream's base64 vector, checked as the client will read it: whole little-endian
    float32s, at least one, every one finite."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if not raw or len(raw) % 4:
        raise ValueError("not whole float32s")
    packed = float32s(raw)
    # Finite float32s cannot overflow a double's sum; a NaN or an infinity makes it one.
    if not math.isfinite(sum(packed)):
        raise ValueError("not finite")
    return value


def _vector(value: Any) -> Vector:
    if isinstance(value, str):
        return _base64_vector(value)
    vector = _FLOATS.validate_python(value)
    if not vector:
        raise ValueError("an empty vector")
    return vector


def _index(item: dict[str, Any], position: int) -> int:
    index = item.get("index", position)
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError("index is not an integer")
    return index


def parse_data(data: Any, provider: str) -> list[Vector]:
    """`{"data": [{"embedding": [...], "index": i}, ...]}`, as OpenAI, GigaChat and ERNIE
    all answer, in input order: indexes exactly 0..n-1 in any order, vectors of finite
    numbers, all of one length (a hostile or broken answer is a 502, never passed on)."""
    if isinstance(data, dict) and "error" in data and "data" not in data:
        # An error report sent with HTTP 200: its message is the only explanation there is.
        raise UpstreamError(
            f"{provider} answered with an error: {error_text(data) or 'no message'}"
        )
    try:
        items = data["data"]
        if not isinstance(items, list):
            raise TypeError("data is not a list")
        ordered: list[Vector | None] = [None] * len(items)
        for position, item in enumerate(items):
            index = _index(item, position)
            if not 0 <= index < len(items) or ordered[index] is not None:
                raise ValueError(f"index {index} is out of place")
            ordered[index] = _vector(item["embedding"])
    except (KeyError, TypeError, ValueError, AttributeError, ValidationError):
        raise UpstreamResponseError(
            f"{provider} answered embeddings with an unknown shape"
        ) from None
    vectors = [vector for vector in ordered if vector is not None]
    check_sizes(vectors, provider)
    return vectors


def check_sizes(vectors: Sequence[Vector], provider: str, wanted: int | None = None) -> None:
    """One length for every vector of a request (the `dimensions` asked for, if any)."""
    sizes = {vector_size(vector) for vector in vectors}
    if wanted is not None:
        sizes.add(wanted)
    if len(sizes) > 1:
        lengths = ", ".join(map(str, sorted(sizes)))
        raise UpstreamResponseError(
            f"{provider} answered embeddings of different lengths ({lengths})"
        )


def token_count(value: Any, provider: str) -> int:
    """A token count an upstream reported: absent is 0; anything but a whole number >= 0 is
    a broken answer."""
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UpstreamResponseError(f"{provider} answered embeddings with a bad token count")
    return value


def usage_tokens(data: Any, provider: str) -> int:
    usage = data.get("usage") if isinstance(data, dict) else None
    if usage is None:
        return 0
    if not isinstance(usage, dict):
        raise UpstreamResponseError(f"{provider} answered embeddings with a bad usage object")
    return token_count(usage.get("prompt_tokens"), provider)
