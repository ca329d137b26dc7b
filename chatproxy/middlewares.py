"""Request ids and access log, proxy API keys, and JSON rendering of every error."""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from chatproxy.errors import (
    AuthenticationError,
    ChatProxyError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
)
from chatproxy.keys import REQUEST_ID, SETTINGS
from chatproxy.logs import request_id_var
from chatproxy.schemas import ErrorResponse

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("chatproxy.access")
error_log = logging.getLogger("chatproxy.errors")
REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
PUBLIC_PATHS = frozenset({"/health", "/ready", "/docs", "/redoc", "/openapi.json", "/"})
PUBLIC_PREFIXES = ("/static/", "/docs/")


def is_openai_route(request: web.Request) -> bool:
    return request.path.startswith("/v1/") or request.path == "/v1"


def error_body(exc: ChatProxyError, request: web.Request) -> bytes:
    request_id = request_id_var.get()
    if is_openai_route(request):
        envelope = {
            "error": {
                "message": exc.message,
                "type": exc.type,
                "param": exc.param,
                "code": exc.type,
            }
        }
        return json.dumps(envelope, ensure_ascii=False).encode()
    return (
        ErrorResponse(error=exc.message, type=exc.type, param=exc.param, request_id=request_id)
        .model_dump_json(exclude_none=True)
        .encode()
    )


def error_response(exc: ChatProxyError, request: web.Request) -> web.Response:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return web.Response(
        status=exc.status,
        body=error_body(exc, request),
        content_type="application/json",
        headers=headers,
    )


def _from_http_exception(exc: web.HTTPException, request: web.Request) -> ChatProxyError:
    if exc.status == 404:
        return NotFoundError(f"no route for {request.method} {request.path}")
    if exc.status == 405:
        return MethodNotAllowedError(f"{request.method} is not allowed on {request.path}")
    if exc.status == 413:
        limit = request.app[SETTINGS].max_body_bytes
        return PayloadTooLargeError(f"request body is larger than {limit} bytes")
    error = ChatProxyError(exc.reason)
    error.status = exc.status
    error.type = "http_error"
    return error


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response carries the id, streams and errors included."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: pick the request id, log one access line, echo the id back."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    # 128 random bits, as uuid4 has, without building a UUID object on every request.
    request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else os.urandom(16).hex()
    token = request_id_var.set(request_id)
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s %d %.1fms",
                request.method,
                request.path,
                status,
                (time.perf_counter() - started) * 1000,
            )
        request_id_var.reset(token)


@web.middleware
async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes JSON: ours, aiohttp's HTTP exceptions, and bugs (500)."""
    try:
        return await handler(request)
    except ChatProxyError as exc:
        if exc.status >= 500:
            error_log.warning(
                "%s %s -> %d %s", request.method, request.path, exc.status, exc.message
            )
        return error_response(exc, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http_exception(exc, request), request)
    except Exception:
        error_log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ChatProxyError("internal error; see the server log"), request)


def _is_public(request: web.Request) -> bool:
    path = request.path
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


@web.middleware
async def require_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With PROXY_API_KEYS set, everything but the public routes needs a Bearer key."""
    keys = request.app[SETTINGS].api_keys
    if keys and not _is_public(request):
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        presented = presented.strip()
        valid = scheme.lower() == "bearer" and any(
            hmac.compare_digest(presented.encode(), key.encode()) for key in keys
        )
        if not valid:
            raise AuthenticationError(
                "missing or invalid API key: send 'Authorization: Bearer <key>'"
            )
    return await handler(request)
