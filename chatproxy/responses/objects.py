"""OpenAI's `Response` object and its output items, built as dicts (a test holds them to
the openai SDK's own types)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from random import getrandbits
from typing import Any

from chatproxy.errors import UpstreamResponseError
from chatproxy.responses.schemas import ResponsesRequest
from chatproxy.schemas import Usage


def new_id(prefix: str) -> str:
    """`resp_`, `msg_`, `fc_` and 192 random bits, as OpenAI's ids look; not secrets."""
    return f"{prefix}_{getrandbits(192):048x}"


# A response id chatproxy made: nothing else in the history store (a conversation a client
# named, a response's `<id>:calls` record) may be read, deleted or continued as a response.
RESPONSE_ID = re.compile(r"resp_[0-9a-f]{48}")


def is_response_id(value: str) -> bool:
    return RESPONSE_ID.fullmatch(value) is not None


def message_id(response_id: str) -> str:
    """A response's message item id, the same in its answer, its events and GET."""
    return f"msg_{response_id.removeprefix('resp_')}"


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    content = [] if text is None else [text_part(text)]
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def function_call_id(call_id: str) -> str:
    """A function call's item id, made from its call id: the same in the answer, its
    events and a later GET, which has only the call id kept."""
    return f"fc_{call_id}"


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(
    response_id: str, text: str, tool_calls: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """A reply as output items: its text as a message (when it has text or nothing else),
    then each tool call as a `function_call`."""
    items = []
    if text or not tool_calls:
        items.append(message_item(message_id(response_id), text))
    for call in tool_calls or []:
        name, arguments = function_fields(call.get("function"))
        call_id = text_field(call.get("id"), "tool call id") or new_id("call")
        item_id = function_call_id(call_id)
        items.append(function_call_item(item_id, call_id, name or "", arguments or ""))
    return items


def text_field(value: Any, what: str) -> str | None:
    """A tool call's text field as the upstream sent it: text, or absent."""
    if value is None or isinstance(value, str):
        return value
    raise UpstreamResponseError(f"the upstream sent a {what} that is not text")


def function_fields(function: Any) -> tuple[str | None, str | None]:
    """A tool call's `function` object: its name and arguments, each text or absent."""
    if function is None:
        return None, None
    if not isinstance(function, dict):
        raise UpstreamResponseError("the upstream sent a tool call whose function is no object")
    name = text_field(function.get("name"), "function name")
    return name, text_field(function.get("arguments"), "function arguments")


def usage_object(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def _tools(body: ResponsesRequest | None) -> list[dict[str, Any]]:
    tools = []
    for tool in (body.tools if body is not None else None) or []:
        tools.append(
            {
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
                "strict": tool.strict,
            }
        )
    return tools


@dataclass(slots=True)
class ResponseHead:
    """What every form of one response shares: in events, the final object, and GET."""

    id: str
    model: str
    body: ResponsesRequest | None = None  # None when read back from the store
    created_at: float = field(default_factory=time.time)
    stored: bool = False

    def object(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: Usage | None = None,
        *,
        finish_reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = self.body
        if finish_reason == "length":
            status = "incomplete"
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        text = (body.text if body is not None else None) or {"format": {"type": "text"}}
        return {
            "id": self.id,
            "object": "response",
            "created_at": int(self.created_at),
            "status": status,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": body.instructions if body is not None else None,
            "max_output_tokens": body.max_output_tokens if body is not None else None,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": body.parallel_tool_calls is not False if body else True,
            "previous_response_id": body.previous_response_id if body is not None else None,
            "temperature": body.temperature if body is not None else None,
            "top_p": body.top_p if body is not None else None,
            "tool_choice": (body.tool_choice if body is not None else None) or "auto",
            "tools": _tools(body),
            "text": text,
            "truncation": "disabled",
            "usage": usage_object(usage),
            "metadata": (body.metadata if body is not None else None) or {},
            "store": self.stored,
        }
