"""ERNIE's embeddings: `.../wenxinworkshop/embeddings/<endpoint>`, beside the chat ones.

The model picks the endpoint as for chat, so an unknown name must be one plain path segment
(the access token travels in the query string: no name may walk out of the base path).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from yarl import URL

from chatproxy.clients.ernie import ErnieClient
from chatproxy.clients.ernie_rules import ErnieTokenError, raise_for_error_code
from chatproxy.embeddings.base import Ask, Embedded, Input, Limits, parse_data, usage_tokens
from chatproxy.errors import InvalidRequestError

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEFAULT_LIMITS = Limits(max_batch=16)


# Model -> (endpoint, limits), from Baidu's qianfan SDK and its documentation: at most 16
# texts a call (one for tao-8k), and a length cap in characters beside the one in tokens.
MODELS: dict[str, tuple[str, Limits]] = {
    "embedding-v1": ("embedding-v1", Limits(16, 1000)),
    "bge-large-zh": ("bge_large_zh", Limits(16, 2000)),
    "bge-large-en": ("bge_large_en", Limits(16, 2000)),
    "tao-8k": ("tao_8k", Limits(1, 28000)),
}


def endpoint(model: str) -> tuple[str, Limits]:
    known = MODELS.get(model.lower())
    if known is not None:
        return known
    if _SEGMENT.fullmatch(model) is None:
        raise InvalidRequestError(
            f"model: '{model}' is not an ERNIE embedding model; a custom endpoint name is one "
            "path segment of letters, digits, '.', '_' and '-'",
            param="model",
        )
    return model, DEFAULT_LIMITS


def _token_rejected(exc: Exception) -> bool:
    return isinstance(exc, ErnieTokenError)


class ErnieEmbedder:
    provider = "ernie"
    takes_tokens = False
    takes_dimensions = False

    def __init__(self, client: ErnieClient) -> None:
        self.client = client
        # ERNIE_BASE_URL names the chat endpoints' folder; embeddings are its sibling.
        self.base = URL(client.base_url).parent / "embeddings"

    def limits(self, model: str) -> Limits:
        return endpoint(model)[1]

    async def embed(self, inputs: Sequence[Input], ask: Ask) -> Embedded:
        url = self.base / endpoint(ask.model)[0]
        payload = {"input": list(inputs)}
        upstream = self.client.upstream

        async def call(token: str) -> Any:
            return await upstream.call_json(
                "POST",
                url,
                params={"access_token": token},
                json=payload,
                check=raise_for_error_code,
            )

        data = await self.client.tokens.with_token(call, rejected=_token_rejected)
        return Embedded(parse_data(data, self.provider), usage_tokens(data, self.provider))
