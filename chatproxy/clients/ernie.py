"""The `ernie` provider: Baidu Qianfan's wenxinworkshop API, errors-in-200 and all."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
from pydantic import SecretStr

from chatproxy.clients.auth import OAuthClient
from chatproxy.clients.base import Completion, CompletionRequest, Delta
from chatproxy.clients.ernie_rules import (
    MODELS,
    ErnieTokenError,
    ernie_payload,
    finish_reason,
    model_info,
    raise_for_error_code,
)
from chatproxy.clients.http import Upstream, parse_json
from chatproxy.clients.openai_format import parse_usage
from chatproxy.clients.sse import iter_events
from chatproxy.errors import UpstreamError, UpstreamResponseError
from chatproxy.schemas import Usage


def _token_rejected(exc: Exception) -> bool:
    return isinstance(exc, ErnieTokenError)


async def _reject_json_answer(resp: aiohttp.ClientResponse) -> None:
    """A stream request answered with plain JSON is an error report, not a stream."""
    if resp.content_type == "text/event-stream":
        return
    try:
        data = parse_json(await resp.read(), "ernie")
    finally:
        resp.release()
    raise_for_error_code(data)
    raise UpstreamResponseError("ERNIE answered a stream request without a stream")


class ErnieClient(OAuthClient):
    """Token in the query string; the model name picks the endpoint path."""

    name = "ernie"

    def __init__(
        self,
        upstream: Upstream,
        *,
        base_url: str,
        auth_url: str,
        api_key: SecretStr,
        secret_key: SecretStr,
        default_model: str,
    ) -> None:
        super().__init__(
            upstream, base_url=base_url, auth_url=auth_url, default_model=default_model
        )
        self._api_key = api_key
        self._secret_key = secret_key

    async def _fetch_token(self) -> tuple[str, float]:
        params = {
            "grant_type": "client_credentials",
            "client_id": self._api_key.get_secret_value(),
            "client_secret": self._secret_key.get_secret_value(),
        }
        data = await self.upstream.call_json(
            "POST", self.auth_url, params=params, headers={"Accept": "application/json"}
        )
        try:
            return str(data["access_token"]), time.time() + float(data["expires_in"])
        except (KeyError, TypeError, ValueError):
            raise UpstreamResponseError(
                "ERNIE's token endpoint answered without access_token/expires_in"
            ) from None

    def _url(self, model: str) -> str:
        return f"{self.base_url}/{model_info(model).endpoint}"

    async def complete(self, request: CompletionRequest) -> Completion:
        payload = ernie_payload(request, stream=False)

        async def call(token: str) -> Any:
            return await self.upstream.call_json(
                "POST",
                self._url(request.model),
                params={"access_token": token},
                json=payload,
                check=raise_for_error_code,
            )

        data = await self.tokens.with_token(call, rejected=_token_rejected)
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, str):
            raise UpstreamResponseError("ERNIE answered 200 without a result")
        return Completion(
            content=result,
            model=request.model,
            usage=parse_usage(data.get("usage")) or Usage(),
            finish_reason=finish_reason(data),
        )

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Delta, None]:
        payload = ernie_payload(request, stream=True)

        async def call(token: str) -> aiohttp.ClientResponse:
            return await self.upstream.open_stream(
                "POST",
                self._url(request.model),
                params={"access_token": token},
                json=payload,
                headers={"Accept": "text/event-stream"},
                check=_reject_json_answer,
            )

        resp = await self.tokens.with_token(call, rejected=_token_rejected)
        ended = False
        try:
            async for event in iter_events(
                resp, provider=self.name, timeouts=self.upstream.timeouts
            ):
                data = parse_json(event.data.encode(), self.name)
                raise_for_error_code(data)
                ended = bool(data.get("is_end"))
                yield Delta(
                    content=str(data.get("result") or ""),
                    finish_reason=finish_reason(data) if ended else None,
                    usage=parse_usage(data.get("usage")) if ended else None,
                )
                if ended:
                    break
            if not ended:
                raise UpstreamError("ERNIE ended the stream without is_end")
        finally:
            if ended:
                resp.release()
            else:
                resp.close()

    async def models(self) -> list[str]:
        return sorted(MODELS)
