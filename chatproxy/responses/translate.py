"""A Responses request as the chat request the pipeline already serves, or a 400 naming
the part no provider behind chatproxy can do."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from chatproxy.errors import InvalidRequestError
from chatproxy.openai_schemas import OpenAIChatRequest
from chatproxy.responses.schemas import InputContent, InputItem, ResponsesRequest
from chatproxy.schemas import describe_validation_error

TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal"})


def refuse_unsupported(body: ResponsesRequest) -> None:
    """What would change the answer if it were quietly dropped."""
    if body.reasoning and any(value is not None for value in body.reasoning.values()):
        raise InvalidRequestError(
            "reasoning options are not supported through chatproxy", param="reasoning"
        )
    if body.background:
        raise InvalidRequestError(
            "background responses are not supported through chatproxy", param="background"
        )
    if body.include:
        raise InvalidRequestError(
            f"include: chatproxy has none of {', '.join(body.include)} to add", param="include"
        )
    if body.conversation is not None:
        raise InvalidRequestError(
            "conversation objects are not supported; chain responses with previous_response_id",
            param="conversation",
        )
    if body.prompt is not None:
        raise InvalidRequestError("stored prompts are not supported", param="prompt")


def _part(part: InputContent, where: str) -> dict[str, Any]:
    if part.type in TEXT_PARTS:
        return {"type": "text", "text": part.text or str(getattr(part, "refusal", "") or "")}
    if part.type == "input_image" and part.image_url:
        image: dict[str, Any] = {"url": part.image_url}
        if part.detail:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    raise InvalidRequestError(
        f"{where}: '{part.type}' content is not supported through chatproxy "
        "(text, and images by URL for chatgpt/... models)",
        param=where,
    )


def _content(content: str | list[InputContent] | None, where: str) -> Any:
    if content is None or isinstance(content, str):
        return content or ""
    parts = [_part(part, f"{where}.{i}") for i, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def input_messages(value: str | list[InputItem]) -> list[dict[str, Any]]:
    """`input` as chat messages; a run of function calls is one assistant message."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        where = f"input.{index}"
        kind = item.type or "message"
        if kind == "message" and item.role is not None:
            messages.append(
                {"role": item.role, "content": _content(item.content, f"{where}.content")}
            )
        elif kind == "function_call" and item.call_id and item.name:
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments or ""},
            }
            previous = messages[-1] if messages else None
            if (
                previous is not None
                and previous["role"] == "assistant"
                and previous.get("tool_calls")
            ):
                previous["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output" and item.call_id:
            output = _content(item.output, f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
        else:
            raise InvalidRequestError(
                f"{where}: input items of type '{kind}' are not supported through chatproxy "
                "(messages, function_call and function_call_output are)",
                param=where,
            )
    if not messages:
        raise InvalidRequestError("input: give at least one item", param="input")
    return messages


def chat_tools(body: ResponsesRequest) -> list[dict[str, Any]] | None:
    if not body.tools:
        return None
    tools = []
    for index, tool in enumerate(body.tools):
        if tool.type != "function" or not tool.name:
            raise InvalidRequestError(
                f"tools.{index}: the built-in tool '{tool.type}' is not available through "
                "chatproxy; only function tools are",
                param=f"tools.{index}.type",
            )
        function: dict[str, Any] = {"name": tool.name}
        for key in ("description", "parameters", "strict"):
            if getattr(tool, key) is not None:
                function[key] = getattr(tool, key)
        tools.append({"type": "function", "function": function})
    return tools


def chat_tool_choice(choice: str | dict[str, Any] | None) -> Any:
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequestError(
        f"tool_choice of type '{choice.get('type')}' is not supported; name a function tool",
        param="tool_choice",
    )


def response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    """`text.format` as chat's `response_format`; plain text needs none."""
    fmt = (text or {}).get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt["type"]}


def chat_request(body: ResponsesRequest) -> OpenAIChatRequest:
    """The chat request the pipeline serves; `instructions` go in later, unrecorded."""
    refuse_unsupported(body)
    fields: dict[str, Any] = {
        "model": body.model,
        "messages": input_messages(body.input),
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_tokens": body.max_output_tokens,
        "tools": chat_tools(body),
        "tool_choice": chat_tool_choice(body.tool_choice),
        "parallel_tool_calls": body.parallel_tool_calls,
        "response_format": response_format(body.text),
        "user": body.user,
    }
    try:
        return OpenAIChatRequest.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise InvalidRequestError(message.replace("messages.", "input."), param=param) from None
