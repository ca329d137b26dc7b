"""The `chatgpt` provider: OpenAI's API or any server that speaks it (vLLM, TGI, Ollama)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from pydantic import SecretStr
from yarl import URL

from chatproxy.clients.base import Capabilities, Completion, CompletionRequest, Delta
from chatproxy.clients.http import Upstream
from chatproxy.clients.openai_format import (
    OPENAI_PASSTHROUGH,
    chat_payload,
    parse_completion,
    stream_deltas,
)
from chatproxy.errors import UpstreamResponseError


class OpenAIClient:
    """Bearer key, `POST {base}/chat/completions`, `GET {base}/models`."""

    name = "chatgpt"
    capabilities = Capabilities(openai_messages=True, tools=True, openai_fields=OPENAI_PASSTHROUGH)

    def __init__(
        self, upstream: Upstream, *, base_url: str, api_key: SecretStr | None, default_model: str
    ) -> None:
        self.upstream = upstream
        self.base_url = base_url.rstrip("/")
        self.default_model = default_model
        # Parsed and built once: both would otherwise cost a few µs on every request.
        self._completions_url = URL(f"{self.base_url}/chat/completions")
        self._headers = {"Accept": "application/json"}
        if api_key is not None:
            self._headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"
        self._json_headers = {**self._headers, "Content-Type": "application/json"}

    def _post_headers(self, request_id: str | None) -> dict[str, str]:
        if not request_id:
            return self._json_headers
        return {**self._json_headers, "X-Request-ID": request_id}

    async def complete(self, request: CompletionRequest) -> Completion:
        data = await self.upstream.call_json(
            "POST",
            self._completions_url,
            json=chat_payload(request, stream=False),
            headers=self._post_headers(request.request_id),
        )
        return parse_completion(data, provider=self.name, model=request.model)

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Delta, None]:
        payload = chat_payload(request, stream=True)
        payload["stream_options"] = {"include_usage": True}
        resp = await self.upstream.open_stream(
            "POST",
            self._completions_url,
            json=payload,
            headers={**self._post_headers(request.request_id), "Accept": "text/event-stream"},
        )
        async for delta in stream_deltas(resp, provider=self.name, timeouts=self.upstream.timeouts):
            yield delta

    async def models(self) -> list[str]:
        data: Any = await self.upstream.call_json(
            "GET", f"{self.base_url}/models", headers=self._headers
        )
        try:
            return sorted(str(item["id"]) for item in data["data"])
        except (KeyError, TypeError):
            raise UpstreamResponseError(
                f"{self.name} answered /models with an unknown shape"
            ) from None

    def not_ready_reason(self) -> str | None:
        return None

    def status(self) -> dict[str, Any]:
        return self.upstream.describe(self.base_url)

    async def close(self) -> None:
        await self.upstream.session.close()
