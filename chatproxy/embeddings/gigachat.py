"""GigaChat's embeddings: `POST {GIGACHAT_BASE_URL}/embeddings`, its `Embeddings` models.

It answers OpenAI's shape, but counts tokens per input (`data[i].usage.prompt_tokens`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chatproxy.clients.gigachat import GigaChatClient
from chatproxy.embeddings.base import Ask, Embedded, Input, Limits, parse_data, token_count
from chatproxy.errors import UpstreamResponseError

# Texts in one call: GigaChat documents no cap; its LangChain integration long sent at most
# 90 a call, which is known to be accepted.
MAX_BATCH = 90


def _tokens(data: Any, provider: str) -> int:
    """The per-input counts summed (`parse_data` has checked `data` is a list of objects)."""
    total = 0
    for item in data["data"]:
        usage = item.get("usage")
        if usage is not None and not isinstance(usage, dict):
            raise UpstreamResponseError(f"{provider} answered embeddings with a bad usage object")
        total += token_count((usage or {}).get("prompt_tokens"), provider)
    return total


class GigaChatEmbedder:
    provider = "gigachat"
    takes_tokens = False
    takes_dimensions = False

    def __init__(self, client: GigaChatClient) -> None:
        self.client = client
        self.url = f"{client.base_url}/embeddings"

    def limits(self, model: str) -> Limits:
        # Its limit (512 tokens for `Embeddings`) is in its own tokens: it refuses longer
        # inputs itself, and that refusal reaches the client as a 400 naming `input`.
        return Limits(max_batch=MAX_BATCH)

    async def embed(self, inputs: Sequence[Input], ask: Ask) -> Embedded:
        payload = {"model": ask.model, "input": list(inputs)}
        client = self.client

        async def call(token: str) -> Any:
            return await client.upstream.call_json(
                "POST", self.url, json=payload, headers=client._headers(token, ask.request_id)
            )

        data = await client._with_token(call)
        vectors = parse_data(data, self.provider)
        return Embedded(vectors, _tokens(data, self.provider))
