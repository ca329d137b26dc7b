"""Server-sent events off an upstream response, with first-byte and between-chunk timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from chatproxy.clients.http import Timeouts, too_large
from chatproxy.errors import UpstreamConnectionError, UpstreamResponseError, UpstreamTimeoutError

MAX_LINE = 1 << 20


@dataclass(frozen=True, slots=True)
class ServerEvent:
    event: str
    data: str


async def _lines(
    resp: aiohttp.ClientResponse, provider: str, timeouts: Timeouts, deadline: float
) -> AsyncIterator[bytes]:
    """Lines as they arrive; the timeouts apply per network read, not per line."""
    loop = asyncio.get_running_loop()
    wait = timeouts.first_byte
    pending = b""
    received = 0
    while True:
        left = deadline - loop.time()
        limit = min(wait, left)
        try:
            async with asyncio.timeout(limit):
                data = await resp.content.readany()
        except TimeoutError:
            if left <= wait:
                raise UpstreamTimeoutError(
                    f"{provider} did not finish its stream within {timeouts.total:.3g}s "
                    "(UPSTREAM_TIMEOUT)"
                ) from None
            raise UpstreamTimeoutError(
                f"{provider} sent nothing for {limit:.3g}s in the middle of a stream"
            ) from None
        except aiohttp.ClientPayloadError:
            raise UpstreamConnectionError(f"{provider} cut the stream short") from None
        except aiohttp.ClientConnectionError as exc:
            raise UpstreamConnectionError(f"{provider} dropped the stream: {exc}") from None
        if not data:
            if pending:
                yield pending
            return
        received += len(data)
        if received > timeouts.max_body_bytes:
            raise too_large(provider, timeouts.max_body_bytes)
        wait = timeouts.between_chunks
        *lines, pending = (pending + data).split(b"\n")
        if len(pending) > MAX_LINE:
            raise UpstreamResponseError(f"{provider} sent a stream line over {MAX_LINE} bytes")
        for line in lines:
            yield line


async def iter_events(
    resp: aiohttp.ClientResponse, *, provider: str, timeouts: Timeouts
) -> AsyncIterator[ServerEvent]:
    """Parse `text/event-stream` per the HTML spec: fields, multi-line data, blank-line dispatch."""
    deadline = asyncio.get_running_loop().time() + timeouts.total
    event, data = "", list[str]()
    async for raw in _lines(resp, provider, timeouts, deadline):
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if not line:
            if data:
                yield ServerEvent(event or "message", "\n".join(data))
            event, data = "", list[str]()
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:  # a last event without its blank line still counts
        yield ServerEvent(event or "message", "\n".join(data))
