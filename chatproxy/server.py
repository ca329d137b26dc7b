"""Serving the app: client limits on every connection, and the drain on SIGTERM or SIGINT.

The drain, as the README promises: at the signal readiness turns 503 and new chat requests
get 503, while the listener stays open; requests in flight get up to SHUTDOWN_TIMEOUT to
finish; at that deadline a stream still open ends with an error event; then the listener
and every connection close, the upstream sessions close, and the process exits.

aiohttp's RequestHandler and Server are subclassed for what they offer no option for: a
time limit on the first request head, a cap on connections, and JSON bodies for the 400s
its parser answers by itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
import resource
import signal
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.web_protocol import RequestHandler

from chatproxy.access import reload_api_keys
from chatproxy.config import Settings
from chatproxy.drain import Drain
from chatproxy.keys import DRAIN, PROVIDERS, REDACTOR
from chatproxy.logs import add_log_file
from chatproxy.redact import Redactor
from chatproxy.schemas import ErrorResponse

log = logging.getLogger(__name__)
# Where aiohttp's parser messages start quoting the request: `...: b'X-Bad: a\\rb'`.
_QUOTED = re.compile(r"[:\s]+b?['\"]")
SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How often the drain looks whether requests are still in flight.
DRAIN_POLL = 0.02
# After the deadline and the requests' last answers (chatproxy.drain): how long aiohttp
# waits (twice) for a handler before it cuts the connection.
CUT_GRACE = 0.2
# How long a body the handler did not read (413, 401, 408) is still read and thrown away
# before the connection closes, so the client can read the answer; aiohttp's default is 10.
LINGERING_TIME = 2.0
# Descriptors wanted besides client connections: upstream pools, logs, the listener.
SPARE_FDS = 1024
# A refused connection is logged at most this often, seconds.
REFUSAL_LOG_INTERVAL = 10.0


class ChatRequestHandler(RequestHandler):
    """aiohttp's connection protocol, plus a time limit on the first request head and
    JSON bodies on the errors aiohttp answers itself."""

    __slots__ = ("_head_timer",)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        # aiohttp's keep-alive timer already bounds an idle connection and a slow head on
        # a reused one; a new connection must send its first head sooner. Per connection,
        # not per request: the hot path stays as it was.
        manager = self._manager
        if isinstance(manager, ChatServer) and manager.header_timeout < self._keepalive_timeout:
            self._head_timer = self._loop.call_later(manager.header_timeout, self._head_overdue)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self._request_count == 0:  # not one complete request head since it connected
            self.force_close()

    @property
    def busy(self) -> bool:
        return self._request_in_progress

    @property
    def request_task(self) -> asyncio.Task[None] | None:
        """The task handling this connection's request now, if there is one."""
        request = self._current_request
        return request.task if request is not None else None

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's own error answers (a request its parser refused, a handler that failed
        outside the middleware) as JSON, like every other error, without a traceback for
        a client's malformed request."""
        reason = parser_reason(message)
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        elif isinstance(exc, BadHttpMethod):  # TLS or other non-HTTP bytes on the port
            self.logger.debug("not HTTP from %s: %s", request.remote, reason)
        else:
            self.logger.info("malformed request from %s: %s", request.remote, reason)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has begun; no error answer can follow")
        if status == 400:
            error = ErrorResponse(
                error=f"malformed HTTP request: {reason}", type="invalid_request_error"
            )
        elif status >= 500:
            error = ErrorResponse(error="internal error; see the server log", type="internal_error")
        else:
            error = ErrorResponse(error=reason, type="http_error")
        response = web.Response(
            status=status,
            body=error.model_dump_json(exclude_none=True).encode(),
            content_type="application/json",
        )
        response.force_close()
        return response


def parser_reason(message: str | None) -> str:
    """The first line of aiohttp's parser message, without the request bytes it quotes:
    they may hold a client's credentials, and the log line would carry them."""
    line = (message or "bad request").split("\n", 1)[0]
    return _QUOTED.split(line, 1)[0].rstrip(" :.")[:200] or "bad request"


class ChatServer(web.Server):
    """aiohttp's Server, making ChatRequestHandlers and refusing connections past a cap."""

    def __init__(
        self,
        handler: Any,
        *,
        max_connections: int,
        header_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._refusal_logged = -REFUSAL_LOG_INTERVAL

    def __call__(self) -> RequestHandler:
        return ChatRequestHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self._connections) > self.max_connections:
            # Closed at once, before a byte is read: a flood costs no descriptors, and
            # connection_lost unregisters it.
            transport.close()
            now = time.monotonic()
            if now - self._refusal_logged >= REFUSAL_LOG_INTERVAL:
                self._refusal_logged = now
                log.warning(
                    "MAX_CONNECTIONS=%d reached: refusing new connections", self.max_connections
                )

    def busy(self) -> bool:
        """Whether any connection has a request in its handler."""
        return any(isinstance(conn, ChatRequestHandler) and conn.busy for conn in self._connections)

    def request_tasks(self) -> list[asyncio.Task[None]]:
        """The tasks of the requests in flight on every connection."""
        tasks = (
            conn.request_task for conn in self._connections if isinstance(conn, ChatRequestHandler)
        )
        return [task for task in tasks if task is not None and not task.done()]


class ChatRunner(web.AppRunner):
    """aiohttp's AppRunner, serving through a ChatServer with chatproxy's client limits."""

    def __init__(self, app: web.Application, settings: Settings) -> None:
        super().__init__(
            app,
            access_log=None,
            handler_cancellation=True,
            keepalive_timeout=settings.client_keepalive_timeout,
            lingering_time=LINGERING_TIME,
            # The drain has waited SHUTDOWN_TIMEOUT already; this bounds the cut after it.
            shutdown_timeout=CUT_GRACE,
        )
        self.settings = settings

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs on_startup and freezes the app
        return ChatServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            loop=asyncio.get_running_loop(),
            max_connections=self.settings.max_connections,
            header_timeout=self.settings.client_header_timeout,
            **self._kwargs,
        )


def raise_fd_limit(max_connections: int) -> None:
    """Lift the soft descriptor limit toward the hard one, so MAX_CONNECTIONS is reached
    before accept() starts failing (Go does the same at start-up)."""
    wanted = max_connections + SPARE_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        target = soft
    if target < wanted:
        log.warning(
            "MAX_CONNECTIONS=%d wants %d file descriptors; the limit is %d",
            max_connections,
            wanted,
            target,
        )


def open_log_file(settings: Settings, redactor: Redactor) -> logging.Handler | None:
    """LOG_FILE, opened by the process that serves (each of --workers' processes too)."""
    if settings.log_file is None:
        return None
    try:
        return add_log_file(
            settings.log_file,
            max_bytes=settings.log_file_max_bytes,
            backups=settings.log_file_backups,
            fmt=settings.log_format,
            redactor=redactor,
        )
    except OSError as exc:
        raise SystemExit(f"chatproxy: LOG_FILE {settings.log_file}: {exc.strerror}") from None


async def wait_for_requests(server: ChatServer, seconds: float, hurry: asyncio.Event) -> None:
    """Until no request is in flight, `seconds` pass, or a second signal comes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while server.busy() and not hurry.is_set():
        left = deadline - loop.time()
        if left <= 0:
            return
        await asyncio.sleep(min(DRAIN_POLL, left))


async def run(
    app: web.Application,
    settings: Settings,
    announce: Callable[[], None],
    *,
    reuse_port: bool = False,
) -> None:
    """Serve `app` until SIGTERM or SIGINT, then drain and clean up (see the module doc).

    `reuse_port`: bind with SO_REUSEPORT, so `--workers` processes share the port."""
    raise_fd_limit(settings.max_connections)
    drain = app[DRAIN] = Drain()
    runner = ChatRunner(app, settings)
    await runner.setup()
    loop = asyncio.get_running_loop()
    stopping, hurry = asyncio.Event(), asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        if stopping.is_set():
            hurry.set()  # a second signal ends the wait
            return
        stopping.set()
        if PROVIDERS in app:
            app[PROVIDERS].shutting_down = True  # /ready and new chat requests: 503
        log.info("%s: shutting down; requests in flight get %g s", signum.name, timeout)

    timeout = settings.shutdown_timeout
    for signum in SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    # Re-read PROXY_API_KEYS_FILE; requests in flight go on (the key check is at their start).
    loop.add_signal_handler(signal.SIGHUP, reload_api_keys, app)
    try:
        await web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port).start()
        announce()
        await stopping.wait()
        server = runner.server
        assert isinstance(server, ChatServer)
        await wait_for_requests(server, timeout, hurry)
        await drain.expire(server.request_tasks())
    finally:
        for signum in (*SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # removing it restored "terminate"
        await runner.cleanup()  # closes the listener, connections, then upstream sessions


def serve(
    app: web.Application,
    settings: Settings,
    *,
    loop: asyncio.AbstractEventLoop,
    announce: Callable[[], None],
    reuse_port: bool = False,
) -> None:
    """Run `app` on `loop` until a signal's drain ends; the loop is closed after."""
    log_file = open_log_file(settings, app[REDACTOR])
    # Until `run` handles it, SIGHUP (a key rotation's reload) would end the process by
    # default, while it opens its stores or loads a model: it is ignored meanwhile.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    asyncio.set_event_loop(loop)
    main = loop.create_task(run(app, settings, announce, reuse_port=reuse_port))
    try:
        loop.run_until_complete(main)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        pass
    finally:
        rest = asyncio.all_tasks(loop)
        for task in rest:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        if log_file is not None:
            logging.getLogger().removeHandler(log_file)
            log_file.close()
