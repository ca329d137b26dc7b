"""The fake upstreams with their embedding endpoints added, each in its provider's shape."""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.ernie_server import FakeErnie, error
from tests.fakes.gigachat_server import FakeGigaChat
from tests.fakes.openai_server import FakeOpenAI

DIMENSIONS = 8


def fake_vector(text: str | list[int], size: int = DIMENSIONS) -> list[float]:
    """A vector that depends on the input only, with values float32 holds exactly."""
    digest = hashlib.sha256(repr(text).encode()).digest()
    return [(digest[i] - 128) / 64 for i in range(size)]


def packed(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def tokens_of(text: str | list[int]) -> int:
    return len(text) if isinstance(text, list) else len(text.split())


@dataclass
class EmbeddingOpenAI(FakeOpenAI):
    embedding_calls: list[dict[str, Any]] = field(default_factory=list)
    encoding: str | None = None  # answer in this format, whatever was asked
    vector_override: Any = None

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.embedding_calls.append(body)
        if len(body["input"]) > 2048:
            return web.json_response({"error": {"message": "too many inputs"}}, status=400)
        size = body.get("dimensions") or DIMENSIONS
        as_base64 = (self.encoding or body.get("encoding_format")) == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": packed(fake_vector(text, size))
                if as_base64
                else fake_vector(text, size),
            }
            for i, text in enumerate(body["input"])
        ]
        if self.vector_override is not None:
            data[0]["embedding"] = self.vector_override
        tokens = sum(tokens_of(text) for text in body["input"])
        return web.json_response(
            {
                "object": "list",
                "data": data[::-1],  # answers need not come in order: `index` says which
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/v1/embeddings", self.embeddings)
        return app


@dataclass
class EmbeddingGigaChat(FakeGigaChat):
    embedding_calls: list[dict[str, Any]] = field(default_factory=list)
    max_words: int = 400  # stands in for its 512-token limit

    async def embeddings(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"status": 401, "message": "Token has expired"}, status=401)
        body = await request.json()
        self.embedding_calls.append(body)
        if any(not isinstance(text, str) for text in body["input"]):
            return web.json_response({"status": 422, "message": "input: strings"}, status=422)
        if any(tokens_of(text) > self.max_words for text in body["input"]):
            return web.json_response(
                {"status": 413, "message": "Tokens limit exceeded"}, status=413
            )
        data = [
            {
                "object": "embedding",
                "embedding": fake_vector(text),
                "index": i,
                "usage": {"prompt_tokens": tokens_of(text)},
            }
            for i, text in enumerate(body["input"])
        ]
        return web.json_response({"object": "list", "data": data, "model": body["model"]})

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/api/v1/embeddings", self.embeddings)
        return app


@dataclass
class EmbeddingErnie(FakeErnie):
    embedding_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def embeddings(self, request: web.Request) -> web.Response:
        token = request.query.get("access_token", "")
        if token not in self.tokens:
            return error(110, "Access token invalid or no longer valid")
        body = await request.json()
        self.embedding_calls.append((request.match_info["endpoint"], body))
        if len(body["input"]) > 16:
            return error(336003, "embeddings max batch size is 16")
        tokens = sum(tokens_of(text) for text in body["input"])
        return web.json_response(
            {
                "id": "as-e1",
                "object": "embedding_list",
                "created": int(time.time()),
                "data": [
                    {"object": "embedding", "embedding": fake_vector(text), "index": i}
                    for i, text in enumerate(body["input"])
                ],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post(
            "/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/{endpoint}", self.embeddings
        )
        return app
