"""Embeddings from an OpenAI-compatible upstream: `POST {OPENAI_BASE_URL}/embeddings`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chatproxy.clients.openai import OpenAIClient
from chatproxy.embeddings.base import Ask, Embedded, Input, Limits, parse_data, usage_tokens

# OpenAI's documented cap on inputs in one request.
MAX_BATCH = 2048


class OpenAIEmbedder:
    provider = "chatgpt"
    takes_tokens = True
    takes_dimensions = True

    def __init__(self, client: OpenAIClient) -> None:
        self.client = client
        self.url = f"{client.base_url}/embeddings"

    def limits(self, model: str) -> Limits:
        # Lengths are counted in tokens there, which only the upstream can count.
        return Limits(max_batch=MAX_BATCH)

    async def embed(self, inputs: Sequence[Input], ask: Ask) -> Embedded:
        # The client's own format: base64 passes through untouched, and is a quarter the size.
        payload: dict[str, Any] = {
            "model": ask.model,
            "input": list(inputs),
            "encoding_format": ask.encoding,
        }
        if ask.dimensions is not None:
            payload["dimensions"] = ask.dimensions
        data = await self.client.upstream.call_json(
            "POST", self.url, json=payload, headers=self.client._post_headers(ask.request_id)
        )
        return Embedded(parse_data(data, self.provider), usage_tokens(data, self.provider))
