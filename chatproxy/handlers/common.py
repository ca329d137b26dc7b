"""Reading and validating request bodies."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from chatproxy.errors import InvalidRequestError, PayloadTooLargeError
from chatproxy.keys import SETTINGS
from chatproxy.schemas import describe_validation_error

M = TypeVar("M", bound=BaseModel)


async def read_body(request: web.Request) -> bytes:
    """The raw body, refused by its Content-Length before any of it is read when too big."""
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
    return await request.read()  # aiohttp stops chunked bodies at client_max_size (413)


async def parse_body(request: web.Request, model: type[M], **context: Any) -> M:
    body = await read_body(request)
    if not body.strip():
        raise InvalidRequestError("request body is empty; send a JSON object")
    try:
        return model.model_validate_json(body, context=context)
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise InvalidRequestError(message, param=param) from None


def json_response(model: BaseModel, *, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json(exclude_none=True).encode(),
        status=status,
        content_type="application/json",
    )
