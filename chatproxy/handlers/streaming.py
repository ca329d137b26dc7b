"""Relaying a delta stream to the client as SSE, in the native or the OpenAI framing."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from chatproxy.clients.base import Delta
from chatproxy.drain import shutting_down
from chatproxy.errors import ChatProxyError
from chatproxy.keys import DRAIN, REDACTOR
from chatproxy.logs import REQUEST_ID_HEADER, request_id_var
from chatproxy.metrics.web import stream_in_flight, stream_timing_header
from chatproxy.redact import scrubbed
from chatproxy.schemas import Usage

log = logging.getLogger(__name__)
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


@dataclass(slots=True)
class StreamResult:
    """What the stream said, gathered for the final event."""

    parts: list[str] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: Usage | None = None

    def add(self, delta: Delta) -> None:
        if delta.content:
            self.parts.append(delta.content)
        if delta.finish_reason:
            self.finish_reason = delta.finish_reason
        if delta.usage is not None:
            self.usage = delta.usage

    @property
    def content(self) -> str:
        return "".join(self.parts)


class Framer(Protocol):
    def delta(self, delta: Delta) -> bytes: ...

    def done(self, result: StreamResult) -> bytes: ...

    def error(self, exc: ChatProxyError) -> bytes: ...


def sse(data: str, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def error_event_data(exc: ChatProxyError) -> str:
    return json.dumps({"error": exc.message, "type": exc.type}, ensure_ascii=False)


async def relay(
    request: web.Request, deltas: AsyncGenerator[Delta, None], framer: Framer
) -> web.StreamResponse:
    """Wait for the first delta (so early failures stay plain HTTP errors), then stream.

    A stream still open at the shutdown deadline is cancelled by chatproxy.server's drain
    (the pipeline registered it): before its first byte it answers 503, after it ends with
    an error event.
    """
    drain = request.app.get(DRAIN)  # absent where an app is served without chatproxy.server
    try:
        first: Delta | None = await anext(deltas)
    except StopAsyncIteration:
        first = None
    except BaseException as exc:
        await deltas.aclose()
        if isinstance(exc, asyncio.CancelledError) and drain is not None and drain.claims():
            raise shutting_down() from None
        raise
    response = web.StreamResponse(headers=SSE_HEADERS)
    # The middleware sets the id on responses it sees before they are sent; a stream is sent
    # from here, so it carries its own.
    response.headers[REQUEST_ID_HEADER] = request_id_var.get()
    stream_timing_header(response)
    await response.prepare(request)
    in_flight = stream_in_flight(request)
    result = StreamResult()
    try:
        try:
            item = first
            while item is not None:
                result.add(item)
                chunk = framer.delta(item)
                if chunk:
                    await response.write(chunk)
                item = await anext(deltas, None)
            await response.write(framer.done(result))
        except ChatProxyError as exc:
            log.warning("stream failed after the first byte: %s", exc.message)
            await response.write(framer.error(scrubbed(exc, request.app[REDACTOR])))
        except asyncio.CancelledError:
            if drain is None or not drain.claims():
                raise
            await response.write(framer.error(shutting_down()))
        except web.HTTPException:
            raise
        except ConnectionError:
            raise
        except Exception:
            log.exception("stream failed after the first byte")
            error = ChatProxyError("internal error; see the server log")
            await response.write(framer.error(error))
        finally:
            await deltas.aclose()
        await response.write_eof()
    except ConnectionError:
        # The client left, and a write to its socket failed before aiohttp noticed: the
        # answer has no one to go to. aiohttp drops the connection; the access line says 499.
        log.debug("client left mid-stream")
    finally:
        in_flight.dec()
    return response
