"""One provider's HTTP plumbing: retries, the four timeouts, and status -> error mapping."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pydantic_core
from yarl import URL

from chatproxy.clients.constants import MAX_RETRY_AFTER, MAX_UPSTREAM_MESSAGE
from chatproxy.clients.proxy import ProxyRules
from chatproxy.clients.retry import parse_retry_after, retry_delay, should_retry
from chatproxy.errors import (
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamResponseError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from chatproxy.redact import Redactor

log = logging.getLogger(__name__)
T = TypeVar("T")
BAD_REQUEST_STATUSES = frozenset({400, 404, 413, 422})


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds: `total` bounds a whole call, retries and stream included. And the most an
    upstream may send for one call (a body, or a whole stream), since its bytes are untrusted."""

    total: float = 60.0
    connect: float = 10.0
    first_byte: float = 60.0
    between_chunks: float = 30.0
    retries: int = 2
    max_body_bytes: int = 8 * 1024 * 1024


def error_text(data: Any) -> str | None:
    """The message of a parsed error object, whatever its shape; None if it has none."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:MAX_UPSTREAM_MESSAGE]
    for key in ("message", "error_msg", "error_description", "detail", "error"):
        if isinstance(data.get(key), str | int) and data[key] != "":
            return str(data[key])[:MAX_UPSTREAM_MESSAGE]
    return None


def upstream_message(body: bytes) -> str:
    """The human part of an upstream error body, whatever its shape."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = pydantic_core.from_json(text)
    except ValueError:
        return text[:MAX_UPSTREAM_MESSAGE] or "no message"
    return error_text(data) or text[:MAX_UPSTREAM_MESSAGE]


def public_url(url: str) -> str:
    """A URL fit to show: without any user or password written into it."""
    return str(URL(url).with_user(None))


def parse_json(body: bytes, provider: str) -> Any:
    try:
        return pydantic_core.from_json(body)
    except ValueError:
        raise UpstreamResponseError(f"{provider} answered with a body that is not JSON") from None


def too_large(provider: str, limit: int) -> UpstreamResponseError:
    return UpstreamResponseError(
        f"{provider} sent more than {limit} bytes; chatproxy reads at most that much "
        "(MAX_UPSTREAM_BODY_BYTES)"
    )


async def read_capped(resp: aiohttp.ClientResponse, limit: int, provider: str) -> bytes:
    """The whole body, or an error as soon as it passes `limit` bytes (the connection is
    dropped then, not drained)."""
    length = resp.content_length
    if length is not None and length > limit:
        resp.close()
        raise too_large(provider, limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.content.readany():
        size += len(chunk)
        if size > limit:
            resp.close()
            raise too_large(provider, limit)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def embedded_status(data: Any) -> int | None:
    """An HTTP error status written into a JSON body (GigaChat's `{"status": 401, ...}`,
    OpenAI-style `{"error": {"code": 429}}`), for answers that arrive as 200."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    for value in (
        data.get("status"),
        data.get("code"),
        error.get("code") if isinstance(error, dict) else None,
    ):
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
            return value
    return None


def encode_json_body(kwargs: dict[str, Any]) -> None:
    """Encode a `json=` body once, with pydantic-core (about 3x faster than json.dumps)."""
    if "json" in kwargs:
        kwargs["data"] = pydantic_core.to_json(kwargs.pop("json"))
        headers = kwargs.get("headers") or {}
        if "Content-Type" not in headers:
            kwargs["headers"] = {**headers, "Content-Type": "application/json"}


class Upstream:
    """A provider's reused `ClientSession` wrapped in retries, deadlines and error mapping."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        provider: str,
        timeouts: Timeouts,
        redactor: Redactor,
        proxies: ProxyRules | None = None,
    ) -> None:
        self.session = session
        self.provider = provider
        self.timeouts = timeouts
        self.redact = redactor
        self.proxies = proxies or ProxyRules(environment={})
        # Told of each retry, with the error that caused it (metrics set it at start-up).
        self.on_retry: Callable[[UpstreamError], None] | None = None
        self._client_timeout = aiohttp.ClientTimeout(
            total=None, connect=timeouts.connect, sock_connect=timeouts.connect
        )

    def _prepare(self, url: str | URL, kwargs: dict[str, Any]) -> None:
        encode_json_body(kwargs)
        if self.proxies.active:
            kwargs["proxy"] = self.proxies.for_url(url)

    def describe(self, base_url: str) -> dict[str, str]:
        """For `/status`: the base URL, and the proxy calls to it go through, if any; both
        without passwords."""
        shown = {"base_url": public_url(base_url)}
        proxy = self.proxies.for_url(base_url) if self.proxies.active else None
        return {**shown, "proxy": public_url(proxy)} if proxy else shown

    def status_error(self, status: int, body: bytes, headers: Any = None) -> UpstreamStatusError:
        """Map an upstream error status to the error the client sees."""
        message = self.redact(upstream_message(body))
        name = self.provider
        details: dict[str, Any] = {"upstream_status": status, "upstream_message": message}
        if status in BAD_REQUEST_STATUSES:
            return UpstreamBadRequestError(f"{name} rejected the request: {message}", **details)
        if status in (401, 403):
            return UpstreamAuthError(
                f"{name} rejected chatproxy's credentials (HTTP {status}); check the operator's "
                "configuration",
                **details,
            )
        if status == 429:
            retry_after = parse_retry_after(headers.get("Retry-After") if headers else None)
            return UpstreamRateLimitError(
                f"{name} is rate limiting requests: {message}", retry_after=retry_after, **details
            )
        return UpstreamStatusError(f"{name} answered HTTP {status}: {message}", **details)

    async def call_json(
        self,
        method: str,
        url: str | URL,
        *,
        check: Callable[[Any], None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Send a request and return its parsed JSON body, retrying what is worth retrying.

        `check` inspects a 200 body and may raise: ERNIE reports its errors that way, and an
        `UpstreamStatusError` it raises is retried like the HTTP status it names.
        """
        self._prepare(url, kwargs)

        async def attempt() -> Any:
            request = self.session.request(method, url, timeout=self._client_timeout, **kwargs)
            async with await self._first_byte(request) as resp:
                body = await read_capped(resp, self.timeouts.max_body_bytes, self.provider)
                if resp.status >= 400:
                    raise self.status_error(resp.status, body, resp.headers)
            data = parse_json(body, self.provider)
            if check is not None:
                check(data)
            return data

        return await self.retrying(attempt)

    async def open_stream(
        self,
        method: str,
        url: str | URL,
        *,
        check: Callable[[aiohttp.ClientResponse], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> aiohttp.ClientResponse:
        """Send a request and return the open 200 response; retries stop at the first byte.

        `check` may read a 200 answer that is not a stream (ERNIE's errors) and raise; without
        one, a JSON answer is taken for an error report.
        """
        self._prepare(url, kwargs)
        check = check or self.reject_json_answer

        async def attempt() -> aiohttp.ClientResponse:
            resp = await self.session.request(method, url, timeout=self._client_timeout, **kwargs)
            if resp.status >= 400:
                try:
                    body = await read_capped(resp, self.timeouts.max_body_bytes, self.provider)
                finally:
                    resp.release()
                raise self.status_error(resp.status, body, resp.headers)
            if check is not None:
                try:
                    await check(resp)
                except BaseException:
                    resp.close()
                    raise
            return resp

        return await self.retrying(attempt, first_byte=True)

    async def _first_byte(
        self, request: Awaitable[aiohttp.ClientResponse]
    ) -> aiohttp.ClientResponse:
        """The response head, within UPSTREAM_FIRST_BYTE_TIMEOUT when that is shorter than the
        total (a plain call's first byte usually comes when the whole answer is ready)."""
        first_byte = self.timeouts.first_byte
        if first_byte >= self.timeouts.total:
            return await request  # the total deadline around the attempt covers it
        try:
            async with asyncio.timeout(first_byte):
                return await request
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"{self.provider} did not send the first byte within {first_byte:.3g}s"
            ) from None

    async def reject_json_answer(self, resp: aiohttp.ClientResponse) -> None:
        """A stream request answered 200 with JSON: an error report (or a server that does
        not stream), whose message the client must still get."""
        if resp.content_type != "application/json":
            return
        try:
            body = await read_capped(resp, self.timeouts.max_body_bytes, self.provider)
        finally:
            resp.release()
        data = parse_json(body, self.provider)
        status = embedded_status(data)
        if status is not None:
            raise self.status_error(status, body)
        if isinstance(data, dict) and "choices" in data:
            raise UpstreamResponseError(
                f"{self.provider} answered a stream request with a whole completion; "
                "it does not stream"
            )
        message = self.redact(upstream_message(body))
        raise UpstreamStatusError(
            f"{self.provider} answered the stream request with an error: {message}",
            upstream_status=502,
            upstream_message=message,
        )

    async def retrying(self, attempt: Callable[[], Awaitable[T]], *, first_byte: bool = False) -> T:
        """Run `attempt` until it succeeds, fails for good, or the total deadline passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeouts.total
        retries = self.timeouts.retries
        tries = 0
        while True:
            remaining = deadline - loop.time()
            limit = min(remaining, self.timeouts.first_byte) if first_byte else remaining
            error: UpstreamError
            try:
                async with asyncio.timeout(limit):
                    return await attempt()
            except UpstreamStatusError as exc:
                if not should_retry(exc.upstream_status):
                    raise
                error = exc
            except aiohttp.ConnectionTimeoutError:
                error = UpstreamConnectionError(
                    f"could not connect to {self.provider} within {self.timeouts.connect:g}s"
                )
            except aiohttp.ClientPayloadError:
                error = UpstreamConnectionError(f"{self.provider} cut its answer short")
            except (aiohttp.ClientConnectionError, ConnectionError) as exc:
                reason = self.redact(str(exc)) or type(exc).__name__
                error = UpstreamConnectionError(f"could not reach {self.provider}: {reason}")
            except aiohttp.ClientHttpProxyError as exc:
                raise UpstreamConnectionError(
                    f"the proxy refused to carry the call to {self.provider}: HTTP {exc.status} "
                    f"{self.redact(exc.message)}"
                ) from None
            except aiohttp.ClientResponseError as exc:
                raise UpstreamResponseError(
                    f"{self.provider} sent a malformed HTTP answer: {self.redact(exc.message)}"
                ) from None
            except TimeoutError:
                what = "the first byte" if first_byte and limit < remaining else "an answer"
                raise UpstreamTimeoutError(
                    f"{self.provider} did not send {what} within {limit:.3g}s"
                ) from None
            delay = retry_delay(tries, error.retry_after)
            spent = tries >= retries
            too_late = loop.time() + delay >= deadline
            if spent or too_late or (error.retry_after or 0) > MAX_RETRY_AFTER:
                raise error
            tries += 1
            if self.on_retry is not None:
                self.on_retry(error)
            log.warning(
                "%s: %s; retry %d of %d in %.2fs",
                self.provider,
                error.message,
                tries,
                retries,
                delay,
            )
            await asyncio.sleep(delay)
