"""Pydantic models of answers that handlers build as dicts, for the document only.

The handlers keep building their dicts (cheaper on the hot path); tests/test_openapi.py and
the schemathesis run hold the answers to these models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    """Liveness: the process answers."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """`/ready`: 200 when every configured provider (and the history store) can serve."""

    status: Literal["ready", "not_ready"]
    providers: dict[str, str] = Field(
        description="Provider (and `history`, `server`) -> `ok` or why it is not ready.",
        examples=[{"openai": "ok", "history": "ok"}],
    )


class ProviderStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    configured: bool
    in_flight: int
    reason: str | None = Field(None, description="Why the provider is not configured.")
    default_model: str | None = None
    ready: bool | None = None


class HistoryStatus(BaseModel):
    enabled: bool
    store: str | None = Field(None, description="The store's kind and place, secrets removed.")
    max_turns: int | None = None


class ServerStatus(BaseModel):
    """`/status`: version, uptime and every provider's state, scrubbed of secrets."""

    version: str
    uptime_s: float
    shutting_down: bool
    providers: dict[str, ProviderStatus]
    history: HistoryStatus


class ProviderModels(BaseModel):
    """`GET /{provider}/models`: the names one provider serves."""

    provider: str
    default_model: str
    models: list[str]


class ConversationModel(BaseModel):
    """A conversation and its default `provider/model` (null: none chosen)."""

    conversation_id: str
    model: str | None = Field(None, examples=["openai/gpt-4o-mini"])


class ConversationDeleted(BaseModel):
    conversation_id: str
    deleted: Literal[True] = True


class StoredMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str
    timestamp: str = Field(description="When it was stored, ISO 8601.")
    model: str | None = None


class Conversation(BaseModel):
    """`GET /history/{conversation_id}`: every stored message, oldest first."""

    conversation_id: str
    model: str | None = None
    messages: list[StoredMessage]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    """Every error under `/v1`, in OpenAI's envelope, so its SDKs raise their own errors."""

    error: OpenAIErrorDetail


class NativeDeltaEvent(BaseModel):
    """`event: delta`: the next piece of the reply's text."""

    content: str


class NativeStreamError(BaseModel):
    """`event: error`: the stream failed after its first byte; it ends here."""

    error: str
    type: str


class OpenAIStreamErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None


class OpenAIStreamError(BaseModel):
    """A `data:` line with an error object, sent when the stream fails after its first
    byte; `data: [DONE]` follows."""

    error: OpenAIStreamErrorDetail
