"""The `gigachat` provider: Sber OAuth (Basic credentials, RqUID, scope), one system message."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from pydantic import SecretStr

from chatproxy.clients.auth import OAuthClient
from chatproxy.clients.base import Capabilities, Completion, CompletionRequest, Delta
from chatproxy.clients.gigachat_functions import (
    adapt_answer,
    adapt_chunk,
    function_call_from,
    functions_from,
    gigachat_messages,
)
from chatproxy.clients.http import Upstream
from chatproxy.clients.openai_format import (
    OPENAI_TOOL_FIELDS,
    chat_payload,
    parse_completion,
    stream_deltas,
)
from chatproxy.errors import InvalidRequestError, UpstreamAuthError, UpstreamResponseError
from chatproxy.schemas import Message

T = TypeVar("T")


def _token_rejected(exc: Exception) -> bool:
    return isinstance(exc, UpstreamAuthError) and exc.upstream_status == 401


def merge_system_messages(messages: list[Message]) -> list[Message]:
    """GigaChat takes exactly one system message, first: fold every system text into it."""
    system = [m.content for m in messages if m.role == "system" and m.content]
    rest = [m for m in messages if m.role != "system"]
    if not system:
        return rest
    return [Message(role="system", content="\n\n".join(system)), *rest]


def gigachat_payload(request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
    """The request in GigaChat's terms: one system message, and OpenAI's tool fields (in
    `extra`) as its functions rather than passed on as they are."""
    raw = request.raw_messages  # /v1 with tools: OpenAI's messages, translated
    adapted = dataclasses.replace(
        request,
        messages=merge_system_messages(request.messages),
        raw_messages=None if raw is None else gigachat_messages(raw, request.added_before),
        extra=None,
    )
    payload = chat_payload(adapted, stream=stream)
    if not payload["messages"]:  # only empty system text was sent: nothing to ask
        raise InvalidRequestError("GigaChat needs at least one message with text", param="messages")
    extra = request.extra or {}
    functions = functions_from(extra)
    if functions:
        payload["functions"] = functions
        function_call = function_call_from(extra, functions)
        if function_call is not None:
            payload["function_call"] = function_call
    # GigaChat refuses temperature 0; its documented way to ask for greedy output is top_p 0.
    if request.temperature == 0:
        payload.pop("temperature")
        payload["top_p"] = 0
    return payload


class GigaChatClient(OAuthClient):
    """OpenAI-shaped chat and models under GIGACHAT_BASE_URL, behind a 30-minute token."""

    name = "gigachat"
    # GigaChat's functions, translated from OpenAI's tools in gigachat_functions.
    capabilities = Capabilities(tools=True, openai_fields=OPENAI_TOOL_FIELDS)

    def __init__(
        self,
        upstream: Upstream,
        *,
        base_url: str,
        auth_url: str,
        credentials: SecretStr,
        scope: str,
        default_model: str,
    ) -> None:
        super().__init__(
            upstream, base_url=base_url, auth_url=auth_url, default_model=default_model
        )
        self._credentials = credentials
        self._scope = scope

    async def _fetch_token(self) -> tuple[str, float]:
        data = await self.upstream.call_json(
            "POST",
            self.auth_url,
            data={"scope": self._scope},
            headers={
                "Authorization": f"Basic {self._credentials.get_secret_value()}",
                "RqUID": str(uuid.uuid4()),
                "Accept": "application/json",
            },
        )
        try:
            return str(data["access_token"]), float(data["expires_at"]) / 1000
        except (KeyError, TypeError, ValueError):
            raise UpstreamResponseError(
                "gigachat's token endpoint answered without access_token/expires_at"
            ) from None

    def _headers(self, token: str, request_id: str | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if request_id:
            headers["X-Request-ID"] = request_id
        return headers

    async def _with_token(self, call: Callable[[str], Awaitable[T]]) -> T:
        return await self.tokens.with_token(call, rejected=_token_rejected)

    async def complete(self, request: CompletionRequest) -> Completion:
        payload = gigachat_payload(request, stream=False)

        async def call(token: str) -> Any:
            return await self.upstream.call_json(
                "POST",
                f"{self.base_url}/chat/completions",
                json=payload,
                headers=self._headers(token, request.request_id),
            )

        data = await self._with_token(call)
        return parse_completion(adapt_answer(data), provider=self.name, model=request.model)

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Delta, None]:
        payload = gigachat_payload(request, stream=True)

        async def call(token: str) -> Any:
            headers = {**self._headers(token, request.request_id), "Accept": "text/event-stream"}
            return await self.upstream.open_stream(
                "POST", f"{self.base_url}/chat/completions", json=payload, headers=headers
            )

        resp = await self._with_token(call)
        timeouts = self.upstream.timeouts
        async for delta in stream_deltas(
            resp, provider=self.name, timeouts=timeouts, adapt=adapt_chunk
        ):
            yield delta

    async def models(self) -> list[str]:
        async def call(token: str) -> Any:
            return await self.upstream.call_json(
                "GET", f"{self.base_url}/models", headers=self._headers(token, None)
            )

        data = await self._with_token(call)
        try:
            return sorted(str(item["id"]) for item in data["data"])
        except (KeyError, TypeError):
            raise UpstreamResponseError("gigachat answered /models with an unknown shape") from None
