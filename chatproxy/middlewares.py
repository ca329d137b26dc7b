"""Request ids, JSON rendering of every error and the access log; proxy API keys."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from random import getrandbits

from aiohttp import web
from aiohttp.typedefs import Middleware

from chatproxy.drain import shutting_down
from chatproxy.errors import (
    AuthenticationError,
    ChatProxyError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
)
from chatproxy.gateway import path_under
from chatproxy.keyring import KeyRing
from chatproxy.keys import DRAIN, REDACTOR, ROOT_PATH, SETTINGS
from chatproxy.logs import REQUEST_ID_HEADER, AccessLog, request_id_var
from chatproxy.metrics.exchange import SERVER_TIMING, server_timing
from chatproxy.metrics.web import observe_request
from chatproxy.redact import scrubbed
from chatproxy.schemas import ErrorResponse

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
access_log = AccessLog()
error_log = logging.getLogger("chatproxy.errors")
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# nginx's status for a request whose client closed the connection first; access lines only.
CLIENT_CLOSED_REQUEST = 499
PUBLIC_PATHS = frozenset({"/health", "/ready", "/docs", "/redoc", "/openapi.json", "/"})
PUBLIC_PREFIXES = ("/static/", "/docs/")
# Public too when METRICS_REQUIRE_KEY=false.
METRICS_PATH = "/metrics"


def is_openai_route(request: web.Request) -> bool:
    root = request.app[ROOT_PATH]
    path = path_under(root, request.path) if root else request.path
    return path is not None and (path.startswith("/v1/") or path == "/v1")


def error_body(exc: ChatProxyError, request: web.Request) -> bytes:
    """Every error body, ours and upstreams' alike, leaves through the log's redaction."""
    exc = scrubbed(exc, request.app[REDACTOR])
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


def _render(exc: BaseException, request: web.Request) -> web.Response:
    """Every failure as JSON: ours, aiohttp's HTTP exceptions, and bugs (500)."""
    if isinstance(exc, ChatProxyError):
        if exc.status >= 500:
            error_log.warning(
                "%s %s -> %d %s", request.method, request.path, exc.status, exc.message
            )
        return error_response(exc, request)
    if isinstance(exc, web.HTTPException):
        return error_response(_from_http_exception(exc, request), request)
    error_log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(ChatProxyError("internal error; see the server log"), request)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost, and on open servers the only one: the request id, JSON errors, one access
    line. One middleware rather than three: each layer costs a few µs on every request."""
    incoming = request.headers.get(REQUEST_ID_HEADER)
    # Log formats print the id unscrubbed, so one that holds a secret is replaced.
    if (
        incoming is not None
        and _SAFE_REQUEST_ID.match(incoming)
        and request.app[REDACTOR](incoming) == incoming
    ):
        request_id = incoming
    else:
        # 128 random bits, as uuid4 has; an id to correlate lines by, not a secret, so the
        # process's PRNG serves and no getrandom syscall is made per request.
        request_id = f"{getrandbits(128):032x}"
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    status = 500
    try:
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            drain = request.app.get(DRAIN)
            if drain is None or not drain.claims():
                status = CLIENT_CLOSED_REQUEST  # the client went away and aiohttp cancelled us
                raise
            response = _render(shutting_down(), request)  # the shutdown deadline: a 503
        except web.HTTPException as exc:
            if exc.status < 400:  # a redirect: aiohttp sends it as it is
                status = exc.status
                exc.headers[REQUEST_ID_HEADER] = request_id
                exc.headers[SERVER_TIMING] = server_timing(started)
                raise
            response = _render(exc, request)
        except Exception as exc:
            response = _render(exc, request)
        status = response.status
        # A stream is prepared by `relay`, which set the id itself before its first byte.
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
            response.headers[SERVER_TIMING] = server_timing(started)
        elif request.transport is None or request.transport.is_closing():
            status = CLIENT_CLOSED_REQUEST  # its client left before the stream's end
        return response
    finally:
        access_log(request.method, request.path, status, (time.perf_counter() - started) * 1000)
        observe_request(request, status, started)
        request_id_var.reset(token)


def _needs_key(path: str, public: frozenset[str], root_path: str) -> bool:
    if root_path:
        inner = path_under(root_path, path)
        if inner is None:  # outside ROOT_PATH: the bare /health and /ready, or a 404
            return False
        path = inner
    return path not in public and not path.startswith(PUBLIC_PREFIXES)


def api_key_check(
    ring: KeyRing, *, root_path: str = "", metrics_public: bool = False
) -> Middleware:
    """With client keys (PROXY_API_KEYS, PROXY_API_KEYS_FILE), everything but the public
    routes needs a Bearer key. Reads `ring` on each request, so a reload takes effect at
    once, and a key file that starts empty can turn auth on later."""
    public = PUBLIC_PATHS | {METRICS_PATH} if metrics_public else PUBLIC_PATHS

    @web.middleware
    async def require_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The path as the router matches it (%2F kept): decoded, `/static%2F..%2Fx/` would
        # look public while the router hands it to the keyed `/{provider}/`.
        if ring and _needs_key(request.rel_url.path_safe, public, root_path):
            scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not ring.accepts(presented.strip()):
                raise AuthenticationError(
                    "missing or invalid API key: send your key in the Authorization header "
                    "(scheme: Bearer)"
                )
        return await handler(request)

    return require_api_key
