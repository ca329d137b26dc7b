"""Server-sent events off an upstream response, with first-byte and between-chunk timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from chatproxy.clients.http import Timeouts
from chatproxy.errors import UpstreamConnectionError, UpstreamResponseError, UpstreamTimeoutError


@dataclass(frozen=True, slots=True)
class ServerEvent:
    event: str
    data: str


async def _lines(
    resp: aiohttp.ClientResponse, provider: str, timeouts: Timeouts, deadline: float
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    wait = timeouts.first_byte
    while True:
        limit = min(wait, deadline - loop.time())
        try:
            async with asyncio.timeout(limit):
                line = await resp.content.readline()
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"{provider} sent nothing for {max(limit, 0):.3g}s in the middle of a stream"
            ) from None
        except aiohttp.ClientPayloadError:
            raise UpstreamConnectionError(f"{provider} cut the stream short") from None
        except aiohttp.ClientConnectionError as exc:
            raise UpstreamConnectionError(f"{provider} dropped the stream: {exc}") from None
        except ValueError:  # a line past aiohttp's buffer limit
            raise UpstreamResponseError(f"{provider} sent a stream line too long to read") from None
        if not line:
            return
        wait = timeouts.between_chunks
        yield line


async def iter_events(
    resp: aiohttp.ClientResponse, *, provider: str, timeouts: Timeouts
) -> AsyncIterator[ServerEvent]:
    """Parse `text/event-stream` per the HTML spec: fields, multi-line data, blank-line dispatch."""
    deadline = asyncio.get_running_loop().time() + timeouts.total
    event, data = "", list[str]()
    async for raw in _lines(resp, provider, timeouts, deadline):
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
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
