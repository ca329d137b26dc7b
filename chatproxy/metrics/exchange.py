"""What one request's upstream call took: written by the pipeline, read at the request's end.

A context variable carries it, so neither side needs the other: the pipeline sets it inside
the handler's task, and the request middleware (the same task) reads it after the handler.
"""

from __future__ import annotations

from contextvars import ContextVar
from time import perf_counter
from types import TracebackType

from chatproxy.clients.base import Delta
from chatproxy.schemas import Usage

SERVER_TIMING = "Server-Timing"


class UpstreamCall:
    """One upstream call of a request, timed by `with`; `ok` once it ended without error."""

    __slots__ = ("first_byte", "model", "ok", "provider", "seconds", "started", "usage")

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.started = 0.0
        self.seconds: float | None = None  # None while the call is under way
        self.first_byte: float | None = None  # streams: seconds to the first delta
        self.ok = False
        self.usage: Usage | None = None

    def __enter__(self) -> UpstreamCall:
        self.started = perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.seconds = perf_counter() - self.started
        # An abandoned stream ends with GeneratorExit or CancelledError: not a success.
        self.ok = exc_type is None

    def arrived(self, delta: Delta) -> None:
        """A streamed delta came: the first one's time, and the usage the last one carries."""
        if self.first_byte is None:
            self.first_byte = perf_counter() - self.started
        if delta.usage is not None:
            self.usage = delta.usage


_current: ContextVar[UpstreamCall | None] = ContextVar("chatproxy_upstream_call", default=None)


def upstream_call(provider: str, model: str) -> UpstreamCall:
    """The pipeline's hook: `with upstream_call(provider, model) as call:` around the call."""
    call = UpstreamCall(provider, model)
    _current.set(call)
    return call


def current_call() -> UpstreamCall | None:
    return _current.get()


def take_call() -> UpstreamCall | None:
    """The request's call, forgotten here so that nothing later on the task sees it."""
    call = _current.get()
    if call is not None:
        _current.set(None)
    return call


def server_timing(started: float) -> str:
    """A plain answer's `Server-Timing`: the upstream call and chatproxy's own share, in ms."""
    elapsed = perf_counter() - started
    call = _current.get()
    if call is None or call.seconds is None:
        return f"proxy;dur={elapsed * 1000:.2f}"
    upstream = call.seconds
    return f"upstream;dur={upstream * 1000:.2f}, proxy;dur={(elapsed - upstream) * 1000:.2f}"


def stream_timing() -> str | None:
    """A stream's `Server-Timing`, sent before the upstream has finished: what is known then,
    the time to the upstream's first delta (or, for one that ended without any, its whole)."""
    call = _current.get()
    if call is None:
        return None
    if call.first_byte is None:
        return None if call.seconds is None else f"upstream;dur={call.seconds * 1000:.2f}"
    return f'upstream;desc="first byte";dur={call.first_byte * 1000:.2f}'
