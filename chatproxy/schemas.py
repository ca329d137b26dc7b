"""Pydantic models of the native API's requests, responses and errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Model names and conversation ids: what may travel in a URL, a header and a log line.
NAME_CHARS = "A-Za-z0-9._:/-"
NAME_MAX = 128
NAME_PATTERN = rf"^[{NAME_CHARS}]+$"
NAME_RULE = f"at most {NAME_MAX} characters of A-Z a-z 0-9 . _ : / -"
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN)]
Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """One turn of a conversation."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Role
    content: str


class SamplingFields(BaseModel):
    """Fields shared by the native and the OpenAI-compatible request."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stream: bool = Field(
        False, description="Answer as Server-Sent Events (the `text/event-stream` answer)."
    )


class ChatRequest(SamplingFields):
    """Body of `POST /{provider}/`."""

    model_config = ConfigDict(extra="ignore")

    model: Name | None = Field(None, description="The provider's model; its default if absent.")
    messages: list[Message] = Field(
        min_length=1,
        description="The conversation so far, oldest first.",
        examples=[[{"role": "user", "content": "Hello!"}]],
    )
    stop: list[str] | str | None = None
    conversation_id: Name | None = Field(
        None,
        description="With the history layer on (HISTORY_STORE), the server keeps the "
        "conversation under this id: send only the new messages.",
    )


@dataclass(slots=True)
class Usage:
    """Token counts; a plain dataclass, as one is built for every answer (5x cheaper)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        """For hand-built JSON: pydantic-core serialises a dict faster than a dataclass."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


class ChatResponse(BaseModel):
    """Answer of `POST /{provider}/`: the sent array extended by the reply."""

    model: str
    messages: list[Message]
    usage: Usage
    finish_reason: str | None = None
    conversation_id: str | None = None


class ErrorResponse(BaseModel):
    """Every error of the native routes (`/v1` answers OpenAI's envelope instead)."""

    error: str = Field(description="What went wrong, as a sentence.")
    type: str = Field(description="A stable kind to branch on.", examples=["not_found"])
    param: str | None = Field(None, description="The request field at fault, dotted.")
    request_id: str | None = Field(None, description="As the X-Request-ID header says.")


class ModelCard(BaseModel):
    """One entry of `GET /models`: OpenAI's shape plus the provider and bare model name."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    provider: str
    model: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def describe_validation_error(error: ValidationError) -> tuple[str, str | None]:
    """The first problem as a sentence naming the field, and the field's dotted path."""
    first: Any = error.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return (
            f"request body is not valid JSON: {first['msg'].removeprefix('Invalid JSON: ')}",
            None,
        )
    location = ".".join(str(part) for part in first["loc"])
    if not location:
        return f"request body: {first['msg']}", None
    return f"{location}: {first['msg']}", location
