"""A delta stream as the Responses API's typed SSE events.

response.created, response.in_progress; per output item output_item.added, then for text
content_part.added, output_text.delta..., output_text.done, content_part.done, and for a
function call function_call_arguments.delta..., function_call_arguments.done; then
output_item.done; finally response.completed — or error and response.failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pydantic_core

from chatproxy.clients.base import Delta
from chatproxy.errors import ChatProxyError, UpstreamResponseError
from chatproxy.handlers.streaming import StreamResult
from chatproxy.responses.objects import (
    ResponseHead,
    function_call_id,
    function_call_item,
    function_fields,
    message_id,
    message_item,
    new_id,
    text_field,
    text_part,
)

# The codes `response.failed` may carry (the SDK's ResponseError.code); others are ours.
FAILED_CODES = {"rate_limit_exceeded": "rate_limit_exceeded"}


@dataclass(slots=True)
class _Call:
    output_index: int
    item_id: str
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class ResponsesFramer:
    def __init__(self, head: ResponseHead) -> None:
        self.head = head
        self.sequence = 0
        self.started = False
        self.next_index = 0
        self.message_index: int | None = None
        self.message_id = message_id(head.id)
        self.text: list[str] = []
        self.calls: dict[int, _Call] = {}

    def tool_calls(self) -> list[dict[str, Any]]:
        """The function calls streamed so far, as OpenAI's chat `tool_calls`."""
        return [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": "".join(call.arguments)},
            }
            for call in self.calls.values()
        ]

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + pydantic_core.to_json(data) + b"\n\n"

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        response = self.head.object("in_progress", [])
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def _open_message(self) -> bytes:
        if self.message_index is not None:
            return b""
        self.message_index = self.next_index
        self.next_index += 1
        where = {"item_id": self.message_id, "output_index": self.message_index}
        return self._event(
            "response.output_item.added",
            output_index=self.message_index,
            item=message_item(self.message_id, None, "in_progress"),
        ) + self._event("response.content_part.added", **where, content_index=0, part=text_part(""))

    def delta(self, delta: Delta) -> bytes:
        out = self._start()
        if delta.content:
            out += self._open_message()
            self.text.append(delta.content)
            out += self._event(
                "response.output_text.delta",
                item_id=self.message_id,
                output_index=self.message_index,
                content_index=0,
                delta=delta.content,
                logprobs=[],
            )
        for fragment in delta.tool_calls or []:
            out += self._call_fragment(fragment)
        return out

    def _call_fragment(self, fragment: dict[str, Any]) -> bytes:
        index = fragment.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int):
            raise UpstreamResponseError("the upstream sent a tool call whose index is no integer")
        name, arguments = function_fields(fragment.get("function"))
        call_id = text_field(fragment.get("id"), "tool call id")
        call = self.calls.get(index)
        out = b""
        if call is None:
            call_id = call_id or new_id("call")
            call = _Call(self.next_index, function_call_id(call_id), call_id, name or "")
            self.next_index += 1
            self.calls[index] = call
            item = function_call_item(call.item_id, call.call_id, call.name, "", "in_progress")
            out += self._event(
                "response.output_item.added", output_index=call.output_index, item=item
            )
        if arguments:
            call.arguments.append(arguments)
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=call.item_id,
                output_index=call.output_index,
                delta=arguments,
            )
        return out

    def _close_message(self) -> tuple[bytes, dict[str, Any] | None]:
        if self.message_index is None:
            if self.calls:
                return b"", None
            out = self._open_message()  # an empty answer is still an (empty) message
        else:
            out = b""
        text = "".join(self.text)
        where = {"item_id": self.message_id, "output_index": self.message_index}
        item = message_item(self.message_id, text)
        out += self._event(
            "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
        )
        out += self._event(
            "response.content_part.done", **where, content_index=0, part=text_part(text)
        )
        out += self._event("response.output_item.done", output_index=self.message_index, item=item)
        return out, item

    def done(self, result: StreamResult) -> bytes:
        out = self._start()
        closed, message = self._close_message()
        out += closed
        items: list[tuple[int, dict[str, Any]]] = []
        if message is not None and self.message_index is not None:
            items.append((self.message_index, message))
        for call in self.calls.values():
            arguments = "".join(call.arguments)
            item = function_call_item(call.item_id, call.call_id, call.name, arguments)
            out += self._event(
                "response.function_call_arguments.done",
                item_id=call.item_id,
                output_index=call.output_index,
                name=call.name,
                arguments=arguments,
            )
            out += self._event(
                "response.output_item.done", output_index=call.output_index, item=item
            )
            items.append((call.output_index, item))
        output = [item for _, item in sorted(items, key=lambda pair: pair[0])]
        response = self.head.object(
            "completed", output, result.usage, finish_reason=result.finish_reason
        )
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return out + self._event(kind, response=response)

    def error(self, exc: ChatProxyError) -> bytes:
        out = self._start()
        out += self._event("error", code=exc.type, message=exc.message, param=exc.param)
        failure = {"code": FAILED_CODES.get(exc.type, "server_error"), "message": exc.message}
        response = self.head.object("failed", [], error=failure)
        return out + self._event("response.failed", response=response)
