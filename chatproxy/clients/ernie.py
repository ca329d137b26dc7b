"""The `ernie` provider: Baidu Qianfan's wenxinworkshop API, errors-in-200 and all."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import aiohttp
from pydantic import SecretStr
from yarl import URL

from chatproxy.clients.auth import OAuthClient
from chatproxy.clients.base import Capabilities, Completion, CompletionRequest, Delta
from chatproxy.clients.ernie_rules import (
    MODELS,
    ErnieTokenError,
    ernie_payload,
    model_info,
    parse_answer,
    parse_event,
    raise_for_error_code,
)
from chatproxy.clients.http import Upstream, parse_json, read_capped
from chatproxy.clients.sse import iter_events
from chatproxy.errors import UpstreamError, UpstreamResponseError


def _token_rejected(exc: Exception) -> bool:
    return isinstance(exc, ErnieTokenError)


def _json_answer_check(limit: int) -> Callable[[aiohttp.ClientResponse], Awaitable[None]]:
    async def reject_json_answer(resp: aiohttp.ClientResponse) -> None:
        """A stream request answered with plain JSON is an error report, not a stream."""
        if resp.content_type == "text/event-stream":
            return
        try:
            data = parse_json(await read_capped(resp, limit, "ernie"), "ernie")
        finally:
            resp.release()
        raise_for_error_code(data)
        raise UpstreamResponseError("ERNIE answered a stream request without a stream")

    return reject_json_answer


class ErnieClient(OAuthClient):
    """Token in the query string; the model name picks the endpoint path."""

    name = "ernie"
    capabilities = Capabilities()

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

    def _url(self, model: str) -> URL:
        # model_info admits one plain segment only; yarl's `/` quotes it besides.
        return URL(self.base_url) / model_info(model).endpoint

    async def complete(self, request: CompletionRequest) -> Completion:
        payload = ernie_payload(request, stream=False)
        url = self._url(request.model)

        async def call(token: str) -> Any:
            return await self.upstream.call_json(
                "POST",
                url,
                params={"access_token": token},
                json=payload,
                check=raise_for_error_code,
            )

        data = await self.tokens.with_token(call, rejected=_token_rejected)
        return parse_answer(data, request.model)

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Delta, None]:
        payload = ernie_payload(request, stream=True)
        url = self._url(request.model)
        check = _json_answer_check(self.upstream.timeouts.max_body_bytes)

        async def call(token: str) -> aiohttp.ClientResponse:
            return await self.upstream.open_stream(
                "POST",
                url,
                params={"access_token": token},
                json=payload,
                headers={"Accept": "text/event-stream"},
                check=check,
            )

        resp = await self.tokens.with_token(call, rejected=_token_rejected)
        ended = False
        try:
            async for event in iter_events(
                resp, provider=self.name, timeouts=self.upstream.timeouts
            ):
                delta = parse_event(event.data)
                ended = delta.finish_reason is not None
                yield delta
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
