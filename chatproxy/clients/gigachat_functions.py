"""OpenAI tool calling in GigaChat's terms: `functions`, `function_call`, `function` role.

GigaChat speaks OpenAI's older function-calling dialect: tools are `functions`, the model
answers with one `function_call` whose `arguments` is a JSON object (not a string), and a
result comes back as a `function` message whose content must itself be a JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from random import getrandbits
from typing import Any

import pydantic_core

from chatproxy.errors import InvalidRequestError


def tool_call_id() -> str:
    return f"call_{getrandbits(96):024x}"


def functions_from(extra: Mapping[str, Any]) -> list[dict[str, Any]]:
    """OpenAI `tools` (and legacy `functions`) as GigaChat `functions` (shapes validated by
    the request schema already)."""
    functions = []
    for index, tool in enumerate(extra.get("tools") or []):
        if tool.get("type") != "function":
            raise InvalidRequestError(
                f"tools.{index}: gigachat calls functions only, not '{tool.get('type')}' tools",
                param=f"tools.{index}.type",
            )
        functions.append(tool["function"])
    return functions + list(extra.get("functions") or [])


def function_call_from(extra: Mapping[str, Any], functions: list[dict[str, Any]]) -> Any:
    """`tool_choice` as GigaChat's `function_call`: "auto", "none" or {"name": ...}."""
    choice = extra.get("tool_choice", extra.get("function_call"))
    if choice is None:
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or choice).get("name")
        return {"name": name} if name else "auto"
    if choice == "required":  # no such mode: with one function, name it; else let it choose
        return {"name": functions[0]["name"]} if len(functions) == 1 else "auto"
    return choice if choice in ("auto", "none") else None


def _text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.get("type") != "text" or part.get("text") is None:
            raise InvalidRequestError(
                f"{where}.content: gigachat takes text parts only, not '{part.get('type')}'",
                param=f"{where}.content",
            )
        texts.append(part["text"])
    return "".join(texts)


def _as_json_object(content: str) -> str:
    """A function result as GigaChat wants it: a JSON object; anything else is wrapped."""
    try:
        if isinstance(pydantic_core.from_json(content), dict):
            return content
    except ValueError:
        pass
    return json.dumps({"result": content}, ensure_ascii=False)


def _function_call(message: dict[str, Any], where: str) -> dict[str, Any]:
    calls = message["tool_calls"]
    if len(calls) != 1:
        raise InvalidRequestError(
            f"{where}.tool_calls: gigachat makes one function call per turn, not {len(calls)}",
            param=f"{where}.tool_calls",
        )
    function = calls[0].get("function")
    if function is None:
        raise InvalidRequestError(
            f"{where}.tool_calls.0: gigachat knows function calls only",
            param=f"{where}.tool_calls.0.type",
        )
    try:
        arguments = pydantic_core.from_json(function.get("arguments") or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise InvalidRequestError(
            f"{where}.tool_calls.0.function.arguments: gigachat needs a JSON object here",
            param=f"{where}.tool_calls.0.function.arguments",
        )
    return {"name": function["name"], "arguments": arguments}


def gigachat_messages(
    messages: list[dict[str, Any]], added_before: int = 0
) -> list[dict[str, Any]]:
    """OpenAI messages (tool calls and results included) as GigaChat messages, with every
    system text folded into one first message, as GigaChat requires. Errors name a message
    by its place in the client's request, after the `added_before` chatproxy put first."""
    names: dict[str, str] = {}  # tool_call_id -> function name, to label the results
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages.{index - added_before}"
        role = message.get("role")
        if role in ("system", "developer"):
            if text := _text(message.get("content"), where):
                system.append(text)
        elif role in ("tool", "function"):
            name = names.get(message.get("tool_call_id", ""), message.get("name"))
            if not name:
                raise InvalidRequestError(
                    f"{where}: a tool result must answer a tool call made earlier",
                    param=f"{where}.tool_call_id",
                )
            content = _as_json_object(_text(message.get("content"), where))
            out.append({"role": "function", "name": name, "content": content})
        elif role == "assistant" and message.get("tool_calls"):
            call = _function_call(message, where)
            names[message["tool_calls"][0].get("id", "")] = call["name"]
            content = _text(message.get("content"), where)
            out.append({"role": "assistant", "content": content, "function_call": call})
        else:
            out.append({"role": role, "content": _text(message.get("content"), where)})
    return ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + out


def _tool_calls(call: Any, *, streamed: bool) -> list[dict[str, Any]] | None:
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        return None
    arguments = call.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments or {}, ensure_ascii=False)
    tool_call: dict[str, Any] = {
        "id": tool_call_id(),
        "type": "function",
        "function": {"name": call["name"], "arguments": arguments},
    }
    return [{"index": 0, **tool_call} if streamed else tool_call]


def adapt_choice(choice: Any, *, streamed: bool) -> None:
    """A GigaChat choice in OpenAI's terms, in place: `function_call` -> `tool_calls`."""
    if not isinstance(choice, dict):
        return
    message = choice.get("delta" if streamed else "message")
    if isinstance(message, dict):
        calls = _tool_calls(message.pop("function_call", None), streamed=streamed)
        if calls:
            message["tool_calls"] = calls
    if choice.get("finish_reason") == "function_call":
        choice["finish_reason"] = "tool_calls"


def _choices(data: Any) -> list[Any]:
    """An answer's choices, if it has a list of them; the parser judges the rest."""
    choices = data.get("choices") if isinstance(data, dict) else None
    return choices if isinstance(choices, list) else []


def adapt_answer(data: Any) -> Any:
    for choice in _choices(data):
        adapt_choice(choice, streamed=False)
    return data


def adapt_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    for choice in _choices(chunk):
        adapt_choice(choice, streamed=True)
    return chunk
