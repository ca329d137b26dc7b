"""Reading and validating request bodies."""

from __future__ import annotations

from collections.abc import Sized
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from chatproxy.errors import InvalidRequestError, PayloadTooLargeError
from chatproxy.schemas import describe_validation_error

M = TypeVar("M", bound=BaseModel)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refused by its Content-Length before any of it is read when too big."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
    return await request.read()  # aiohttp stops chunked bodies at client_max_size (413)


async def parse_body(request: web.Request, model: type[M], limit: int) -> M:
    """`model` from the JSON body of at most `limit` bytes, or a 400 naming the field."""
    body = await read_body(request, limit)
    if not body.strip():
        raise InvalidRequestError("request body is empty; send a JSON object")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise InvalidRequestError(message, param=param) from None


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
