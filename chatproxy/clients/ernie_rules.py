"""ERNIE's rules, as pure functions: model endpoints, message shape, parameters, error codes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pydantic_core

from chatproxy.clients.base import Completion, CompletionRequest, Delta
from chatproxy.clients.openai_format import malformed, parse_usage
from chatproxy.errors import (
    InvalidRequestError,
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamRateLimitError,
    UpstreamResponseError,
    UpstreamStatusError,
)
from chatproxy.schemas import Message, Usage


@dataclass(frozen=True, slots=True)
class ErnieModel:
    endpoint: str
    max_input_chars: int = 20_000
    max_output_tokens: int = 2048


# Model name -> endpoint path under ERNIE_BASE_URL, from Baidu's qianfan SDK; lower-case keys.
MODELS: dict[str, ErnieModel] = {
    "ernie-4.0-8k": ErnieModel("completions_pro"),
    "ernie-4.0-8k-latest": ErnieModel("ernie-4.0-8k-latest"),
    "ernie-4.0-8k-preview": ErnieModel("ernie-4.0-8k-preview"),
    "ernie-4.0-8k-0329": ErnieModel("ernie-4.0-8k-0329"),
    "ernie-4.0-8k-0613": ErnieModel("ernie-4.0-8k-0613"),
    "ernie-4.0-turbo-8k": ErnieModel("ernie-4.0-turbo-8k"),
    "ernie-4.0-turbo-128k": ErnieModel("ernie-4.0-turbo-128k", 516_096, 4096),
    "ernie-3.5-8k": ErnieModel("completions"),
    "ernie-3.5-8k-preview": ErnieModel("ernie-3.5-8k-preview"),
    "ernie-3.5-8k-0613": ErnieModel("ernie-3.5-8k-0613"),
    "ernie-3.5-8k-0701": ErnieModel("ernie-3.5-8k-0701"),
    "ernie-3.5-128k": ErnieModel("ernie-3.5-128k", 516_096, 8192),
    "ernie-speed-8k": ErnieModel("ernie_speed", 11_200),
    "ernie-speed-128k": ErnieModel("ernie-speed-128k", 516_096, 4096),
    "ernie-speed-pro-128k": ErnieModel("ernie-speed-pro-128k", 516_096, 4096),
    "ernie-lite-8k": ErnieModel("ernie-lite-8k", 11_200),
    "ernie-lite-8k-0922": ErnieModel("eb-instant", 11_200),
    "ernie-lite-pro-128k": ErnieModel("ernie-lite-pro-128k", 516_096, 4096),
    "ernie-tiny-8k": ErnieModel("ernie-tiny-8k", 24_000),
    "ernie-character-8k": ErnieModel("ernie-char-8k", 24_000),
    "ernie-char-8k": ErnieModel("ernie-char-8k", 24_000),
    "ernie-novel-8k": ErnieModel("ernie-novel-8k", 24_000),
    # The older names many tutorials still use.
    "ernie-bot": ErnieModel("completions"),
    "ernie-bot-4": ErnieModel("completions_pro"),
    "ernie-bot-turbo": ErnieModel("eb-instant", 11_200),
}
MAX_LAST_MESSAGE_CHARS = 4800
MIN_TEMPERATURE = 0.01
MIN_OUTPUT_TOKENS = 2


# An unknown model name becomes the last segment of the endpoint URL (Qianfan's custom
# deployments are addressed that way), so it must be exactly one plain segment: no `/`, no
# `.`/`..`, no `%`, `?` or `#` — otherwise `../../x` walks out of the base URL, carrying the
# access token in its query string to whatever path it names.
_ENDPOINT_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def model_info(name: str) -> ErnieModel:
    """The endpoint for a model; an unknown name is used as the path segment itself."""
    known = MODELS.get(name.lower())
    if known is not None:
        return known
    if _ENDPOINT_SEGMENT.fullmatch(name) is None:
        raise InvalidRequestError(
            f"model: '{name}' is not an ERNIE model; a custom endpoint name is one path segment "
            "of letters, digits, '.', '_' and '-'",
            param="model",
        )
    return ErnieModel(name)


def _merged(messages: list[Message]) -> list[Message]:
    out: list[Message] = []
    for message in messages:
        if out and out[-1].role == message.role:
            out[-1] = Message(role=message.role, content=f"{out[-1].content}\n\n{message.content}")
        else:
            out.append(message)
    return out


def normalize_messages(
    messages: list[Message], *, max_chars: int = 20_000
) -> tuple[str, list[Message]]:
    """ERNIE's shape: a separate system text, then user/assistant alternating from user to
    user (an odd count), consecutive same-role turns merged, oldest turns dropped to fit."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    turns = _merged([m for m in messages if m.role != "system"])
    while turns and turns[-1].role == "assistant":
        turns.pop()  # a reply to nothing: ERNIE must be asked something last
    while turns and turns[0].role == "assistant":
        turns.pop(0)
    if not turns:
        raise InvalidRequestError("ERNIE needs at least one user message", param="messages")
    if len(turns[-1].content) > MAX_LAST_MESSAGE_CHARS:
        raise InvalidRequestError(
            f"the last message is {len(turns[-1].content)} characters; ERNIE accepts at most "
            f"{MAX_LAST_MESSAGE_CHARS}",
            param="messages",
        )
    total = sum(len(m.content) for m in turns)
    while total > max_chars and len(turns) > 1:
        for dropped in turns[:2]:  # the oldest user turn and the reply to it
            total -= len(dropped.content)
        turns = turns[2:]
    return system, turns


def ernie_payload(request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
    info = model_info(request.model)
    system, turns = normalize_messages(request.messages, max_chars=info.max_input_chars)
    payload: dict[str, Any] = {"messages": [{"role": m.role, "content": m.content} for m in turns]}
    if system:
        payload["system"] = system
    if request.temperature is not None:  # ERNIE wants (0, 1]
        payload["temperature"] = min(max(request.temperature, MIN_TEMPERATURE), 1.0)
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    if request.max_tokens is not None:
        payload["max_output_tokens"] = min(
            max(request.max_tokens, MIN_OUTPUT_TOKENS), info.max_output_tokens
        )
    if request.stop:
        payload["stop"] = request.stop[:4]
    if request.request_id:
        payload["user_id"] = request.request_id
    if stream:
        payload["stream"] = True
    return payload


def finish_reason(data: dict[str, Any]) -> str:
    if data.get("need_clear_history"):
        return "content_filter"
    if data.get("is_truncated"):
        return "length"
    return "stop"


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UpstreamResponseError(f"ERNIE sent a stream event whose {key} is not text")
    return value


def parse_answer(data: Any, model: str) -> Completion:
    """A non-streamed ERNIE answer (its error codes already raised) as a `Completion`."""
    if not isinstance(data, dict) or not isinstance(data.get("result"), str):
        raise UpstreamResponseError("ERNIE answered 200 without a result")
    try:
        usage = parse_usage(data.get("usage")) or Usage()
    except UpstreamResponseError as exc:
        raise malformed("ERNIE", "answer", exc) from None
    return Completion(
        content=data["result"],
        model=model,
        usage=usage,
        finish_reason=finish_reason(data),
        clear_history=data.get("need_clear_history") is True,
    )


def parse_event(text: str) -> Delta:
    """One event of an ERNIE stream; the one with `is_end` carries finish reason and usage."""
    try:
        data = pydantic_core.from_json(text)
    except ValueError:
        raise UpstreamResponseError("ERNIE sent a stream event that is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamResponseError("ERNIE sent a stream event that is not a JSON object")
    raise_for_error_code(data)
    ended = data.get("is_end") is True
    try:
        usage = parse_usage(data.get("usage")) if ended else None
    except UpstreamResponseError as exc:
        raise malformed("ERNIE", "stream event", exc) from None
    return Delta(
        content=_text(data, "result"),
        finish_reason=finish_reason(data) if ended else None,
        usage=usage,
        clear_history=data.get("need_clear_history") is True,
    )


TOKEN_ERRORS = frozenset({110, 111})
RATE_LIMITS = frozenset({4, 17, 18, 19, 336501, 336502, 336503})
BAD_PARAMETERS = frozenset(
    {100, 336001, 336002, 336003, 336006, 336007, 336102, 336103, 336104, 336105, 336106}
)
CREDENTIALS = frozenset({6, 13, 14, 15, 336004, 336005})


class ErnieTokenError(UpstreamAuthError):
    """ERNIE said the access token is invalid or expired (110/111)."""


def raise_for_error_code(data: Any) -> None:
    """ERNIE answers HTTP 200 with `{"error_code", "error_msg"}`; turn that into our errors."""
    if not isinstance(data, dict) or "error_code" not in data:
        return
    try:
        code = int(data["error_code"])
    except (TypeError, ValueError):
        code = -1
    text = str(data.get("error_msg") or "no message")
    detail = f"ERNIE error {code}: {text}"
    if code in TOKEN_ERRORS:
        raise ErnieTokenError(detail, upstream_status=401, upstream_message=text)
    if code in RATE_LIMITS:
        raise UpstreamRateLimitError(
            f"ERNIE is rate limiting requests ({detail})",
            upstream_status=429,
            upstream_message=text,
        )
    if code in BAD_PARAMETERS:
        raise UpstreamBadRequestError(
            f"ERNIE rejected the request ({detail})", upstream_status=400, upstream_message=text
        )
    if code in CREDENTIALS:
        raise UpstreamAuthError(
            f"ERNIE rejected chatproxy's credentials ({detail})",
            upstream_status=403,
            upstream_message=text,
        )
    # 1, 2, 336000, 336100 and the unknown: the service's own trouble, worth a retry.
    raise UpstreamStatusError(
        f"ERNIE failed ({detail})", upstream_status=503, upstream_message=text
    )
