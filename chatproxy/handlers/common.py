"""Reading and validating request bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sized
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from chatproxy.errors import InvalidRequestError, PayloadTooLargeError, RequestTimeoutError
from chatproxy.history.base import valid_conversation_id
from chatproxy.keys import SETTINGS
from chatproxy.responses.objects import RESPONSE_ID
from chatproxy.schemas import NAME_RULE, describe_validation_error

M = TypeVar("M", bound=BaseModel)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refused by its Content-Length before any of it is read when too big,
    and a 408 when it takes longer than CLIENT_BODY_TIMEOUT to arrive."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
    if request.content.is_eof():  # it came with the head, as small bodies do: no timer
        return await request.read()
    timeout = request.app[SETTINGS].client_body_timeout
    try:
        async with asyncio.timeout(timeout):
            return await request.read()  # aiohttp stops chunked bodies at client_max_size
    except TimeoutError:
        raise RequestTimeoutError(
            f"the request body did not arrive within {timeout:g} s (CLIENT_BODY_TIMEOUT)"
        ) from None


async def parse_body(request: web.Request, model: type[M], limit: int) -> M:
    """`model` from the JSON body of at most `limit` bytes, or a 400 naming the field."""
    body = await read_body(request, limit)
    if not body.strip():
        raise InvalidRequestError("request body is empty; send a JSON object")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_request(exc) from None


def validated(model: type[M], data: Mapping[str, Any]) -> M:
    """`model` from an already parsed body or a query, or a 400 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(exc) from None


def invalid_request(exc: ValidationError) -> InvalidRequestError:
    """A client's input pydantic refused, as the 400 naming its first bad field."""
    message, param = describe_validation_error(exc)
    return InvalidRequestError(message, param=param)


def check_message_count(messages: Sized, limit: int) -> None:
    """MAX_MESSAGES, checked after validation: a validator would run on every request."""
    if len(messages) > limit:
        raise InvalidRequestError(
            f"messages: at most {limit} messages are accepted, got {len(messages)}",
            param="messages",
        )


def json_response(model: BaseModel, *, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json(exclude_none=True).encode(),
        status=status,
        content_type="application/json",
    )


CONVERSATION_HEADER = "X-Conversation-ID"


def conversation_id_of(request: web.Request, in_body: str | None) -> str | None:
    """The conversation a chat request names: its body's `conversation_id`, or the
    `X-Conversation-ID` header (which the openai SDK's `extra_headers` can send)."""
    header = request.headers.get(CONVERSATION_HEADER)
    if header is None:
        return _not_a_response(in_body, "conversation_id")
    if not valid_conversation_id(header):
        raise InvalidRequestError(
            f"{CONVERSATION_HEADER}: {NAME_RULE}",
            param=CONVERSATION_HEADER,
        )
    if in_body is not None and in_body != header:
        raise InvalidRequestError(
            f"conversation_id '{in_body}' and {CONVERSATION_HEADER} '{header}' differ; send one",
            param="conversation_id",
        )
    return _not_a_response(header, CONVERSATION_HEADER)


def _not_a_response(conversation_id: str | None, param: str) -> str | None:
    """Stored responses live in the conversation store under ids chatproxy makes; a chat
    request naming one (or its `:calls` record) would write into the response's chain."""
    if conversation_id is not None and RESPONSE_ID.match(conversation_id):
        raise InvalidRequestError(
            f"{param}: ids that begin resp_ and 48 hex digits are stored responses; "
            "continue one with POST /v1/responses and previous_response_id",
            param=param,
        )
    return conversation_id
