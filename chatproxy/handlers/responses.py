"""`POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`: OpenAI's Responses API for
every provider, through the one chat pipeline; stored responses live in the history store
(chatproxy/responses/state.py says how)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator

import pydantic_core
from aiohttp import web

from chatproxy.access import client_owner
from chatproxy.clients.base import Delta
from chatproxy.errors import InvalidRequestError
from chatproxy.handlers.common import check_message_count, parse_body
from chatproxy.handlers.openai import build_call
from chatproxy.handlers.streaming import relay
from chatproxy.keys import HISTORY, SETTINGS
from chatproxy.openai_schemas import OpenAIMessage
from chatproxy.pipeline import ChatCall, Turn, open_turn
from chatproxy.responses.objects import ResponseHead, new_id, output_items
from chatproxy.responses.schemas import InputItem, ResponsesRequest
from chatproxy.responses.state import (
    delete_stored,
    forget,
    load_calls,
    plan,
    save_calls,
    stored_response,
)
from chatproxy.responses.stream import ResponsesFramer
from chatproxy.responses.translate import chat_request
from chatproxy.schemas import Message


def with_past(call: ChatCall, past: list[Message]) -> ChatCall:
    """A previous response's turns before the new input, for a request not stored."""
    if not past:
        return call
    if call.openai_messages is not None:
        recalled = [OpenAIMessage(role=m.role, content=m.content) for m in past]
        return dataclasses.replace(call, openai_messages=[*recalled, *call.openai_messages])
    return dataclasses.replace(call, messages=[*past, *call.messages])


def unanswered_outputs(body: ResponsesRequest) -> set[str]:
    """Call ids of `function_call_output` items whose call is not in this input."""
    if isinstance(body.input, str):
        return set()
    outputs = {i.call_id for i in body.input if i.type == "function_call_output" and i.call_id}
    return outputs - {i.call_id for i in body.input if i.type == "function_call"}


async def with_previous_calls(app: web.Application, owner: str, body: ResponsesRequest) -> None:
    """Put the previous response's function calls before the outputs that answer them."""
    wanted = unanswered_outputs(body)
    if not wanted or body.previous_response_id is None or isinstance(body.input, str):
        return
    calls = await load_calls(app, owner, body.previous_response_id)
    items = [
        InputItem(
            type="function_call",
            call_id=call["id"],
            name=call["function"]["name"],
            arguments=call["function"]["arguments"],
        )
        for call in calls
        if call.get("id") in wanted
    ]
    first = next(i for i, item in enumerate(body.input) if item.type == "function_call_output")
    body.input[first:first] = items


async def saving_calls(
    deltas: AsyncGenerator[Delta, None], framer: ResponsesFramer, app: web.Application, owner: str
) -> AsyncGenerator[Delta, None]:
    """The stream, and once it ended well (before its final event), its function calls kept
    for the next request."""
    try:
        async for delta in deltas:
            yield delta
    finally:
        await deltas.aclose()
    await save_calls(app, owner, framer.head.id, framer.tool_calls())


def add_instructions(turn: Turn, instructions: str | None) -> None:
    """`instructions` as a system message after the operator's: sent, but not recorded
    (the recorder keeps the client's input), as OpenAI does not carry them along a chain."""
    if not instructions:
        return
    request = turn.request
    if request.raw_messages is not None:
        raw = request.raw_messages
        lead = next((i for i, m in enumerate(raw) if m.get("role") != "system"), len(raw))
        raw.insert(lead, {"role": "system", "content": instructions})
    else:
        messages = request.messages
        lead = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
        messages.insert(lead, Message(role="system", content=instructions))
    request.added_before += 1


async def create_response(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    body = await parse_body(request, ResponsesRequest, settings.max_body_bytes)
    owner = client_owner(request)
    await with_previous_calls(app, owner, body)
    chat = chat_request(body)
    check_message_count(chat.messages, settings.max_messages)
    response_id = new_id("resp")
    kept = body.store and app.get(HISTORY) is not None
    try:
        # Built first: a request refused here (its model, its tools) forks nothing.
        call = await build_call(app, chat, body.model, response_id if kept else None, owner)
    except InvalidRequestError as exc:
        if exc.param == "response_format":  # the client said it as `text.format`
            exc.param = "text.format"
            exc.message = exc.message.replace("response_format", "text.format")
        raise
    try:
        where = await plan(
            app,
            owner,
            response_id,
            body.previous_response_id,
            body.store,
            store_asked="store" in body.model_fields_set,
        )
        head = ResponseHead(response_id, body.model, body, stored=kept)
        turn = await open_turn(app, with_past(call, where.past))
        add_instructions(turn, body.instructions)
        if body.stream:
            framer = ResponsesFramer(head)
            deltas = turn.stream()
            if head.stored:
                deltas = forgotten_unless_finished(
                    saving_calls(deltas, framer, app, owner), app, owner, response_id
                )
            return await relay(request, deltas, framer)
        completion = await turn.complete()
        if head.stored and completion.tool_calls:
            await save_calls(app, owner, response_id, completion.tool_calls)
        output = output_items(response_id, completion.content, completion.tool_calls)
    except BaseException:
        # Made (or forked, maybe halfway) before the call: a failed response keeps nothing.
        if kept:
            await forget(app, owner, response_id)
        raise
    answer = head.object(
        "completed", output, completion.usage, finish_reason=completion.finish_reason
    )
    return web.Response(body=pydantic_core.to_json(answer), content_type="application/json")


async def forgotten_unless_finished(
    deltas: AsyncGenerator[Delta, None], app: web.Application, owner: str, response_id: str
) -> AsyncGenerator[Delta, None]:
    """The stream; if it fails after its first byte, or its client leaves, the response is
    forgotten (relay reports the failure in an event, so it never reaches the handler)."""
    finished = False
    try:
        async for delta in deltas:
            yield delta
        finished = True
    finally:
        if not finished:
            await deltas.aclose()
            await forget(app, owner, response_id)


async def get_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    answer = await stored_response(request.app, client_owner(request), response_id)
    return web.Response(body=pydantic_core.to_json(answer), content_type="application/json")


async def delete_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    await delete_stored(request.app, client_owner(request), response_id)
    answer = {"id": response_id, "object": "response", "deleted": True}
    return web.Response(body=pydantic_core.to_json(answer), content_type="application/json")
