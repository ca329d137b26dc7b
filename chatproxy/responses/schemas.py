"""`POST /v1/responses`: the request as chatproxy reads it; what it cannot do is refused."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chatproxy.schemas import Name

# Response ids as chatproxy and OpenAI make them (`resp_` and hex), and nothing odder.
RESPONSE_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"


class InputContent(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    image_url: str | None = None
    detail: str | None = None


class InputItem(BaseModel):
    """A message (`type` "message" or absent), a function call, or a function's output."""

    model_config = ConfigDict(extra="allow")

    type: str | None = None
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[InputContent] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[InputContent] | None = None


class ToolSpec(BaseModel):
    """`{"type": "function", "name", "parameters", ...}`; other types are OpenAI's built-ins."""

    model_config = ConfigDict(extra="allow")

    type: str
    name: str | None = Field(None, min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: Name
    input: str | list[InputItem]
    instructions: str | None = None
    previous_response_id: str | None = Field(None, max_length=128, pattern=RESPONSE_ID_PATTERN)
    store: bool = True
    stream: bool = False
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_output_tokens: int | None = Field(None, ge=1)
    text: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    # Accepted only when they ask for nothing chatproxy lacks (see translate.refuse_unsupported).
    reasoning: dict[str, Any] | None = None
    background: bool | None = None
    include: list[str] | None = None
    conversation: Any = None
    prompt: Any = None
    truncation: Literal["auto", "disabled"] | None = None
