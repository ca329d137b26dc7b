"""The local provider's embeddings: the model LOCAL_EMBEDDING_MODEL names, in-process."""

from __future__ import annotations

from collections.abc import Sequence

from chatproxy.embeddings.base import Ask, Embedded, Input, Limits
from chatproxy.local.embeddings import LocalEmbeddingModel


class LocalEmbedder:
    provider = "local"
    takes_tokens = False
    takes_dimensions = False

    def __init__(self, model: LocalEmbeddingModel) -> None:
        self.model = model

    def limits(self, model: str) -> Limits:
        # Lengths are checked in the model's own tokens, on the worker.
        return Limits(max_batch=self.model.max_batch)

    async def embed(self, inputs: Sequence[Input], ask: Ask) -> Embedded:
        vectors, tokens = await self.model.embed([str(text) for text in inputs])
        return Embedded(list(vectors), tokens)
