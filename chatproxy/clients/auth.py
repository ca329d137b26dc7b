"""OAuth access tokens shared by GigaChat and ERNIE: cached, refreshed early, single-flight."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from chatproxy.clients.http import Upstream
from chatproxy.errors import UpstreamAuthError, UpstreamBadRequestError
from chatproxy.redact import Redactor

log = logging.getLogger(__name__)
T = TypeVar("T")
# Refresh this long before expiry (at most a fifth of the token's life), in the background
# while the old token is still good; within HARD_MARGIN callers wait for the new one.
SOFT_MARGIN = 120.0
HARD_MARGIN = 5.0


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    expires_at: float  # wall clock, seconds
    lifetime: float

    def remaining(self, now: float) -> float:
        return self.expires_at - now


Fetch = Callable[[], Awaitable[tuple[str, float]]]


class TokenCache:
    """Holds one provider's token; concurrent callers on a cold cache share one fetch."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        provider: str,
        redactor: Redactor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self.provider = provider
        self._redactor = redactor
        self._clock = clock
        self._token: Token | None = None
        self._refresh: asyncio.Task[Token] | None = None
        self.fetches = 0
        # Told of each fetch: True when it replaces a held token (metrics set it at start-up).
        self.on_fetch: Callable[[bool], None] | None = None

    async def get(self) -> str:
        token, now = self._token, self._clock()
        if token is not None:
            left = token.remaining(now)
            if left > HARD_MARGIN:
                if left < min(SOFT_MARGIN, token.lifetime / 5):
                    self._start_refresh()  # early, while this one still works
                return token.value
        return (await asyncio.shield(self._start_refresh())).value

    async def with_token(
        self, call: Callable[[str], Awaitable[T]], rejected: Callable[[Exception], bool]
    ) -> T:
        """Run `call` with a token; if the provider rejects it, drop it and retry once."""
        token = await self.get()
        try:
            return await call(token)
        except Exception as exc:
            if not rejected(exc):
                raise
            log.info("%s rejected its access token; fetching a new one", self.provider)
            self.invalidate(token)
        return await call(await self.get())

    def invalidate(self, value: str) -> None:
        """The provider rejected `value`: forget it, unless a newer token already replaced it."""
        if self._token is not None and self._token.value == value:
            self._token = None

    def _start_refresh(self) -> asyncio.Task[Token]:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._do_refresh())
            self._refresh.add_done_callback(_consume_exception)
        return self._refresh

    async def _do_refresh(self) -> Token:
        self.fetches += 1
        if self.on_fetch is not None:
            self.on_fetch(self._token is not None)
        try:
            value, expires_at = await self._fetch()
        except (UpstreamAuthError, UpstreamBadRequestError) as exc:
            # The token endpoint judged chatproxy's own credentials: the operator's problem.
            raise UpstreamAuthError(
                f"{self.provider} rejected chatproxy's credentials when asked for a token "
                f"(HTTP {exc.upstream_status}): {exc.upstream_message}",
                upstream_status=exc.upstream_status,
                upstream_message=exc.upstream_message,
            ) from None
        self._redactor.add(value)
        now = self._clock()
        token = Token(value=value, expires_at=expires_at, lifetime=max(expires_at - now, 0.0))
        self._token = token
        log.info("%s: new access token, valid for %.0fs", self.provider, token.lifetime)
        return token

    def status(self) -> dict[str, Any]:
        token = self._token
        if token is None:
            return {"token_held": False}
        return {
            "token_held": True,
            "token_expires_in_s": round(max(token.remaining(self._clock()), 0.0), 1),
        }

    async def close(self) -> None:
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()


def _consume_exception(task: asyncio.Task[Token]) -> None:
    """A failed background refresh is reported to its waiters; don't also warn about it."""
    if not task.cancelled():
        task.exception()


class OAuthClient:
    """What GigaChat and ERNIE share: a session, base and token URLs, and a token cache."""

    name = "oauth"

    def __init__(
        self, upstream: Upstream, *, base_url: str, auth_url: str, default_model: str
    ) -> None:
        self.upstream = upstream
        self.base_url = base_url.rstrip("/")
        self.auth_url = auth_url
        self.default_model = default_model
        self.tokens = TokenCache(self._fetch_token, provider=self.name, redactor=upstream.redact)

    async def _fetch_token(self) -> tuple[str, float]:
        """A new access token and its expiry (epoch seconds); each provider asks its way."""
        raise NotImplementedError

    def not_ready_reason(self) -> str | None:
        return None

    def status(self) -> dict[str, Any]:
        return {**self.upstream.describe(self.base_url), **self.tokens.status()}

    async def close(self) -> None:
        await self.tokens.close()
        await self.upstream.session.close()
