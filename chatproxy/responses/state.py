"""Where responses live: in the history store, one conversation per stored response.

The conversation's id is the response's id, scoped per key like any conversation (so a
key never sees another's responses). `previous_response_id` forks that response's
conversation (its last HISTORY_MAX_TURNS turns) under the new id before the call; the
pipeline then recalls it and records the new turn into it, as for any conversation.
`instructions` are sent but not recorded: OpenAI does not carry them along a chain either.

Conversations keep text only, so a response that ends in function calls keeps them beside
it, in a one-message record under `<id>:calls`: the next request may then send just the
`function_call_output` items with `previous_response_id`, as OpenAI's own loop does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from chatproxy.errors import InvalidRequestError, NotFoundError
from chatproxy.history.base import StoredMessage, utc_now
from chatproxy.history.layer import HistoryLayer, scoped
from chatproxy.keys import HISTORY
from chatproxy.responses.objects import (
    ResponseHead,
    is_response_id,
    output_items,
)
from chatproxy.schemas import Message

log = logging.getLogger(__name__)


def response_not_found(response_id: str, param: str | None = None) -> NotFoundError:
    return NotFoundError(f"Response with id '{response_id}' not found.", param=param)


def checked_id(response_id: str, param: str | None = None) -> str:
    """A response id chatproxy made, or a 404 as for any id it does not hold."""
    if not is_response_id(response_id):
        raise response_not_found(response_id, param)
    return response_id


def history_needed(what: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{what} needs responses kept on the server, and this chatproxy keeps none: set "
        "HISTORY_STORE, or send store: false and the whole conversation in input",
        param=param,
    )


@dataclass(slots=True)
class Plan:
    """How one request uses the store."""

    conversation_id: str | None  # where the pipeline records this response, if anywhere
    past: list[Message]  # a previous response's turns, for a request that is not stored


async def plan(
    app: web.Application,
    owner: str,
    response_id: str,
    previous_id: str | None,
    store: bool,
    store_asked: bool,
) -> Plan:
    history = app.get(HISTORY)
    if history is None:
        if previous_id is not None:
            raise history_needed("previous_response_id", "previous_response_id")
        if store and store_asked:
            raise history_needed("store: true", "store")
        return Plan(None, [])  # `store` left at its default: served, and not kept
    if previous_id is not None:
        checked_id(previous_id, "previous_response_id")
    if not store:
        past = await _recall(history, owner, previous_id) if previous_id else []
        return Plan(None, past)
    if previous_id is not None:
        source, target = scoped(previous_id, owner), scoped(response_id, owner)
        store_ = history.store
        forked = await history.run(lambda: store_.fork(source, target, owner, history.max_turns))
        if not forked:
            raise response_not_found(previous_id, "previous_response_id")
    return Plan(response_id, [])


async def _recall(history: HistoryLayer, owner: str, response_id: str) -> list[Message]:
    store, key = history.store, scoped(response_id, owner)
    recalled = await history.run(lambda: store.recall(key, owner, history.max_turns))
    if recalled is None:
        raise response_not_found(response_id, "previous_response_id")
    return recalled.messages


def _layer(app: web.Application, response_id: str) -> HistoryLayer:
    history = app.get(HISTORY)
    if history is None:
        raise response_not_found(response_id)  # nothing is ever stored without a store
    return history


def calls_id(response_id: str) -> str:
    return f"{response_id}:calls"


async def stored_response(app: web.Application, owner: str, response_id: str) -> dict[str, Any]:
    """A stored response as GET returns it: its reply's text and function calls."""
    history = _layer(app, response_id)
    store, key = history.store, scoped(checked_id(response_id), owner)
    messages = await history.run(lambda: store.messages(key, owner))
    info = await history.run(lambda: store.info(key, owner))
    last = messages[-1] if messages else None
    # Its own turn is the one written after its conversation was made (a fork copies older
    # ones): none means the call failed, or has not finished.
    if info is None or last is None or last.timestamp < info.created_at:
        raise response_not_found(response_id)
    head = ResponseHead(response_id, last.model or info.model or "", stored=True)
    head.created_at = info.created_at.timestamp()
    calls = await load_calls(app, owner, response_id)
    text = last.content if last.role == "assistant" else ""
    has_reply = last.role == "assistant" or bool(calls)
    output = output_items(response_id, text, calls) if has_reply else []
    return head.object("completed", output)


async def save_calls(
    app: web.Application, owner: str, response_id: str, calls: list[dict[str, Any]]
) -> None:
    """A stored response's function calls (OpenAI's chat `tool_calls`), for the next turn."""
    history = app.get(HISTORY)
    if history is None or not calls:
        return
    record = [StoredMessage("assistant", json.dumps(calls, ensure_ascii=False), utc_now())]
    store, key = history.store, scoped(calls_id(response_id), owner)
    await history.run(lambda: store.append_turn(key, owner, record))


async def load_calls(app: web.Application, owner: str, response_id: str) -> list[dict[str, Any]]:
    history = app.get(HISTORY)
    if history is None or not is_response_id(response_id):
        return []
    store, key = history.store, scoped(calls_id(response_id), owner)
    messages = await history.run(lambda: store.messages(key, owner))
    if not messages:
        return []
    return _calls_of(messages[-1].content)


def _calls_of(record: str) -> list[dict[str, Any]]:
    """The calls a record holds; a record written over (it is a conversation the client can
    reach through chat) holds none."""
    try:
        calls = json.loads(record)
    except ValueError:
        calls = None
    if not isinstance(calls, list):
        return []
    return [call for call in calls if _is_call(call)]


def _is_call(call: Any) -> bool:
    function = call.get("function") if isinstance(call, dict) else None
    return (
        isinstance(call.get("id"), str)
        and isinstance(function, dict)
        and isinstance(function.get("name"), str)
        and isinstance(function.get("arguments"), str)
    )


async def delete_stored(app: web.Application, owner: str, response_id: str) -> None:
    history = _layer(app, response_id)
    store, key = history.store, scoped(checked_id(response_id), owner)
    if not await history.run(lambda: store.delete(key, owner)):
        raise response_not_found(response_id)
    calls = scoped(calls_id(response_id), owner)
    await history.run(lambda: store.delete(calls, owner))


async def forget(app: web.Application, owner: str, response_id: str) -> None:
    """A response that failed, or whose client left, keeps nothing: neither its conversation
    (made, or forked, before the call) nor its calls. Never raises: the failure it cleans
    up after is the one to report."""
    history = app.get(HISTORY)
    if history is None:
        return
    store = history.store
    for record in (response_id, calls_id(response_id)):
        try:
            await history.run(partial(store.delete, scoped(record, owner), owner))
        except Exception:
            log.warning("could not remove failed response %s from the history store", response_id)
            return
