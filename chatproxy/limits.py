"""Per-client request and token budgets, and per-provider concurrency caps.

Budgets are fixed one-minute windows of the `limits` library, counted per API key (by its
hash) or, without keys, per client address (an IPv6 client's /64): in this process's
memory, or in Redis when RATE_LIMIT_STORE names one, so copies behind one gateway share
them. Tokens are counted
from the usage each answer reports; a client whose window is over budget is refused until
it resets. A provider past its `<PROVIDER>_MAX_CONCURRENCY` refuses at once (no queue).
The pipeline (`open_turn`) asks `Limits.admit` and charges tokens through the `Quota`.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextvars import ContextVar
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Middleware
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from yarl import URL

from chatproxy.clients.base import Delta
from chatproxy.config import PROVIDER_NAMES, Settings
from chatproxy.errors import RateLimitError
from chatproxy.gateway import client_address, parse_address
from chatproxy.keyring import KeyRing, key_id
from chatproxy.providers import InFlight, Providers

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Seconds a Redis command may take before the request goes on without its limit.
STORE_TIMEOUT = 1.0
# A store that keeps failing is logged at most this often, seconds.
STORE_WARNING_INTERVAL = 10.0
DEFAULT_KEY_PREFIX = "chatproxy"
WINDOW_SECONDS = 60  # the budgets are per minute
# Without keys, an IPv6 client is its /64: the block one subscriber or host is given.
IPV6_CLIENT_PREFIX = 64


class Quota:
    """One request's budget: whom it is charged to, and the `x-ratelimit-*` headers its
    answer carries (set when the pipeline admitted it)."""

    __slots__ = ("headers", "limits", "who")

    def __init__(self, who: str) -> None:
        self.who = who
        self.headers: dict[str, str] = {}
        self.limits: Limits | None = None

    @property
    def counts_tokens(self) -> bool:
        return self.limits is not None and self.limits.tokens is not None

    async def spend(self, tokens: int) -> None:
        if self.limits is not None:
            await self.limits.spend(self.who, tokens)

    async def metered(self, deltas: AsyncGenerator[Delta, None]) -> AsyncGenerator[Delta, None]:
        """`deltas`, charging the usage the stream reported once it has ended, however it
        ended: a client that leaves (or a stream that fails) after the usage came pays it."""
        used = 0
        try:
            async for delta in deltas:
                if delta.usage is not None:
                    used = delta.usage.total_tokens
                yield delta
        finally:
            try:
                await deltas.aclose()
            finally:
                await self.spend(used)


QUOTA = web.RequestKey("quota", Quota)
# The quota of the request being served, for the pipeline, which sees no request.
quota_var: ContextVar[Quota | None] = ContextVar("quota", default=None)


class ConcurrencyCap(InFlight):
    """Counts a provider's requests in flight, as InFlight does, refusing one past `limit`.
    Checked and counted in one step when the call starts, so no two requests race past it."""

    __slots__ = ("limit",)

    def __init__(self, counts: dict[str, int], name: str, limit: int) -> None:
        super().__init__(counts, name)
        self.limit = limit

    def __enter__(self) -> None:
        if self.counts[self.name] >= self.limit:
            raise RateLimitError(
                f"provider '{self.name}' is serving its limit of {self.limit} requests at "
                "once; retry shortly",
                retry_after=1,
            )
        self.counts[self.name] += 1


def _reset_in(reset_time: float, now: float) -> int:
    """Whole seconds until the window resets, rounded up (a retry must not come early) but
    never past the window (Redis reports its TTL in whole seconds, from a later clock)."""
    return min(WINDOW_SECONDS, max(1, math.ceil(reset_time - now)))


def open_storage(url: str | None) -> Storage:
    """Memory, or Redis through redis-py's asyncio client (limits defaults to coredis,
    which chatproxy does not install). `?key_prefix=` in the URL keeps two deployments
    sharing one Redis apart."""
    if url is None or url == "memory://":
        return MemoryStorage()
    parsed = URL(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError("RATE_LIMIT_STORE must be a redis:// or rediss:// URL, or empty")
    prefix = parsed.query.get("key_prefix", DEFAULT_KEY_PREFIX)
    bare = str(parsed.without_query_params("key_prefix"))
    return RedisStorage(
        f"async+{bare}",
        implementation="redispy",
        key_prefix=prefix,
        wrap_exceptions=True,
        socket_timeout=STORE_TIMEOUT,
        socket_connect_timeout=STORE_TIMEOUT,
    )


class Limits:
    """The budgets and caps of one app; `admit` and `spend` are the pipeline's calls."""

    def __init__(
        self,
        *,
        storage: Storage,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        caps: dict[str, int] | None = None,
    ) -> None:
        self.storage = storage
        self.strategy = FixedWindowRateLimiter(storage)
        self.requests: RateLimitItem | None = (
            RateLimitItemPerMinute(requests_per_minute) if requests_per_minute else None
        )
        self.tokens: RateLimitItem | None = (
            RateLimitItemPerMinute(tokens_per_minute) if tokens_per_minute else None
        )
        self.caps = dict(caps or {})
        self._trackers: dict[str, InFlight] = {}
        self._warned = -STORE_WARNING_INTERVAL

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits | None:
        """None when no limit is set: the pipeline then pays one dict lookup, nothing more."""
        caps = {
            name: limit
            for name in PROVIDER_NAMES
            if (limit := getattr(settings, f"{name}_max_concurrency")) is not None
        }
        if not (settings.rate_limit_rpm or settings.rate_limit_tpm or caps):
            return None
        store = settings.rate_limit_store
        try:
            storage = open_storage(store.get_secret_value() if store is not None else None)
        except ValueError as exc:  # a configuration error: one line, no traceback
            raise SystemExit(f"chatproxy: {exc}") from None
        return cls(
            storage=storage,
            requests_per_minute=settings.rate_limit_rpm,
            tokens_per_minute=settings.rate_limit_tpm,
            caps=caps,
        )

    @property
    def budgets(self) -> bool:
        """Whether requests or tokens are counted per client (and so need its identity)."""
        return self.requests is not None or self.tokens is not None

    def track(self, providers: Providers, name: str) -> InFlight:
        """The provider's in-flight counter, capped when it has a concurrency limit."""
        tracker = self._trackers.get(name)
        if tracker is None:
            limit = self.caps.get(name)
            plain = providers.track(name)
            tracker = plain if limit is None else ConcurrencyCap(plain.counts, name, limit)
            self._trackers[name] = tracker
        return tracker

    async def admit(self) -> Quota | None:
        """Charge the current request one request; 429 when its budgets are spent."""
        quota = quota_var.get()
        if quota is None or not self.budgets:
            return None
        quota.limits = self
        try:
            await self._check(quota)
        except StorageError as exc:
            self._store_failed(exc)
        return quota

    async def _check(self, quota: Quota) -> None:
        strategy, who, now = self.strategy, quota.who, time.time()
        whose = "this key" if who.startswith("key:") else "this client address"
        if self.tokens is not None:
            stats = await strategy.get_window_stats(self.tokens, who)
            quota.headers.update(
                _headers("tokens", self.tokens.amount, stats.remaining, stats.reset_time, now)
            )
            if stats.remaining <= 0:
                raise RateLimitError(
                    f"rate limit reached: {self.tokens.amount} tokens per minute for {whose}",
                    retry_after=_reset_in(stats.reset_time, now),
                )
        if self.requests is not None:
            allowed = await strategy.hit(self.requests, who)
            stats = await strategy.get_window_stats(self.requests, who)
            quota.headers.update(
                _headers("requests", self.requests.amount, stats.remaining, stats.reset_time, now)
            )
            if not allowed:
                raise RateLimitError(
                    f"rate limit reached: {self.requests.amount} requests per minute for {whose}",
                    retry_after=_reset_in(stats.reset_time, now),
                )

    async def spend(self, who: str, tokens: int) -> None:
        """Charge the tokens an answer used; past the budget, the next request is refused."""
        if self.tokens is None or tokens <= 0:
            return
        try:
            await self.strategy.hit(self.tokens, who, cost=tokens)
        except StorageError as exc:
            self._store_failed(exc)

    def _store_failed(self, exc: StorageError) -> None:
        """A store that fails lets requests through: a limiter must not take chatproxy down."""
        now = time.monotonic()
        if now - self._warned >= STORE_WARNING_INTERVAL:
            self._warned = now
            log.warning("RATE_LIMIT_STORE failed, requests go unlimited meanwhile: %s", exc)

    async def close(self) -> None:
        if isinstance(self.storage, RedisStorage):
            bridge = self.storage.bridge
            if isinstance(bridge, RedispyBridge):
                from redis.asyncio import Redis

                await cast(Redis, bridge.get_connection()).aclose()
        elif isinstance(self.storage, MemoryStorage) and self.storage.timer is not None:
            self.storage.timer.cancel()  # its expiry sweep, a task of the loop now ending


def _headers(
    kind: str, limit: int, remaining: int, reset_time: float, now: float
) -> dict[str, str]:
    """OpenAI's names: `x-ratelimit-limit-requests`, `...-remaining-...`, `...-reset-...`."""
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(max(0, remaining)),
        f"x-ratelimit-reset-{kind}": f"{_reset_in(reset_time, now)}s",
    }


def address_bucket(address: str | None) -> str:
    """Whose budget an address spends: an IPv6 client's whole /64 (one host may use any
    address in it, so per address it would get a fresh budget at will); IPv4 as is."""
    parsed = parse_address(address) if address else None
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_CLIENT_PREFIX), strict=False))
    return str(parsed) if parsed is not None else str(address)


def rate_limit_context(ring: KeyRing) -> Middleware:
    """Middleware: the request's quota, charged to its key's hash or, without keys, its
    address (the forwarded client's behind TRUSTED_PROXIES)."""

    @web.middleware
    async def rate_limit_context(request: web.Request, handler: Handler) -> web.StreamResponse:
        if ring:
            presented = request.headers.get("Authorization", "").partition(" ")[2].strip()
            quota = Quota(f"key:{key_id(presented)}")
        else:
            quota = Quota(f"addr:{address_bucket(client_address(request))}")
        request[QUOTA] = quota
        token = quota_var.set(quota)
        try:
            return await handler(request)
        finally:
            quota_var.reset(token)

    return rate_limit_context


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, errors and streams too, carries the budgets."""
    quota = request.get(QUOTA)
    if quota is not None and quota.headers:
        response.headers.update(quota.headers)
