"""Every `chatproxy_*` family of one app, and the pre-bound children the hot path uses.

Label values are bounded whatever clients send: routes are the router's templates (a path
no route matched is "other"), providers are the clients' names, models are those the
operator configured plus the first `MAX_MODELS` per provider an upstream accepted (the
rest "other"), statuses are the ones chatproxy answers with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aiohttp.web_urldispatcher import AbstractResource
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chatproxy.errors import UpstreamError, UpstreamStatusError
from chatproxy.metrics.exchange import UpstreamCall
from chatproxy.metrics.fast import CounterFamily, FamiliesCollector, HistogramFamily

OTHER = "other"
NONE = "none"  # the provider and model of a request that called no upstream
MAX_MODELS = 20
# Seconds. Whole requests and upstream calls run from milliseconds (local, cached) to
# minutes (long completions); chatproxy's own share and store operations stay far shorter.
LONG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
SHORT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
Child = Any  # a family's child bound to its label values (prometheus-client leaves it untyped)


def route_label(resource: AbstractResource | None) -> str:
    """The route's template (`/history/{conversation_id}`), never the path a client sent."""
    if resource is None:
        return OTHER
    return resource.canonical or OTHER


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else OTHER


def retry_cause(error: UpstreamError) -> str:
    """Why a call was tried again: the upstream's status, or a connection that failed."""
    if isinstance(error, UpstreamStatusError):
        status = error.upstream_status
        return f"http_{status}" if 400 <= status <= 599 else "http_other"
    return "connection"


class ModelLabels:
    """Which model names may become label values, per provider."""

    def __init__(self, limit: int = MAX_MODELS) -> None:
        self.limit = limit
        self._known: dict[str, set[str]] = {}

    def know(self, provider: str, model: str) -> None:
        """A model the operator configured: always its own label value."""
        self._known.setdefault(provider, set()).add(model)

    def label(self, provider: str, model: str, accepted: bool) -> str:
        """A new name is admitted only once an upstream answered it (a made-up name fails
        there), and only up to the limit."""
        known = self._known.get(provider)
        if known is None:
            known = self._known[provider] = set()
        if model in known:
            return model
        if accepted and len(known) < self.limit:
            known.add(model)
            return model
        return OTHER


class Metrics:
    """One app's families; `observe` is the per-request path.

    Counters and histograms are chatproxy.metrics.fast's in one process, prometheus-client's
    with `multiprocess` (their values go to the shared files); the gauge is always the latter.
    """

    def __init__(self, registry: CollectorRegistry, *, multiprocess: bool = False) -> None:
        self._registry = registry
        self._multiprocess = multiprocess
        self._fast: list[CounterFamily | HistogramFamily] = []
        self.requests = self._counter(
            "chatproxy_requests",
            "Requests answered, by route template, provider, model and status.",
            ("route", "provider", "model", "status"),
        )
        self.request_seconds = self._histogram(
            "chatproxy_request_duration_seconds",
            "Whole requests, from the first middleware to the handler's end.",
            ("route", "provider"),
            LONG_BUCKETS,
        )
        self.proxy_seconds = self._histogram(
            "chatproxy_proxy_duration_seconds",
            "chatproxy's own share of a request: the whole minus its upstream call.",
            ("route", "provider"),
            SHORT_BUCKETS,
        )
        self.upstream_seconds = self._histogram(
            "chatproxy_upstream_duration_seconds",
            "Upstream calls, retries included; a stream's from its start to its last delta.",
            ("provider", "model", "outcome"),
            LONG_BUCKETS,
        )
        self.first_byte_seconds = self._histogram(
            "chatproxy_upstream_first_byte_seconds",
            "Streamed upstream calls: time to the first delta.",
            ("provider", "model"),
            LONG_BUCKETS,
        )
        self.tokens = self._counter(
            "chatproxy_tokens",
            "Tokens by the upstream's usage: direction=in (prompt) and out (completion).",
            ("provider", "model", "direction"),
        )
        self.retries = self._counter(
            "chatproxy_upstream_retries",
            "Upstream calls tried again, by cause (http_<status> or connection).",
            ("provider", "cause"),
        )
        self.token_fetches = self._counter(
            "chatproxy_token_fetches",
            "OAuth access tokens asked for: kind=fetch when none was held, refresh when one "
            "was about to expire or had expired.",
            ("provider", "kind"),
        )
        self.streams = Gauge(
            "chatproxy_streams_in_flight",
            "Streamed answers being sent now.",
            ("provider",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.history_operations = self._counter(
            "chatproxy_history_operations",
            "History store operations, by operation and outcome (ok or error).",
            ("operation", "outcome"),
        )
        self.history_seconds = self._histogram(
            "chatproxy_history_operation_duration_seconds",
            "History store operations.",
            ("operation",),
            SHORT_BUCKETS,
        )
        if self._fast:
            registry.register(FamiliesCollector(self._fast))
        self.models = ModelLabels()
        # Children by the request's raw key: one dict lookup per request, label strings built
        # only the first time a key is seen. The keys are as bounded as the labels.
        self._bound: dict[tuple[Any, ...], tuple[Child, ...]] = {}

    def observe(
        self,
        resource: AbstractResource | None,
        status: int,
        seconds: float,
        call: UpstreamCall | None,
    ) -> None:
        """One finished request: `resource` is the route it matched (None: no route)."""
        if call is None or call.seconds is None:
            key: tuple[Any, ...] = (resource, status)
            children = self._bound.get(key)
            if children is None:
                children = self._bound[key] = self._bind(resource, status, NONE, NONE, None)
            requests, whole, own = children
            requests.inc()
            whole.observe(seconds)
            own.observe(seconds)
            return
        model = self.models.label(call.provider, call.model, call.ok)
        streamed = call.first_byte is not None
        key = (resource, status, call.provider, model, call.ok, streamed)
        children = self._bound.get(key)
        if children is None:
            children = self._bound[key] = self._bind(resource, status, call.provider, model, call)
        requests, whole, own, upstream, first_byte, tokens_in, tokens_out = children
        requests.inc()
        whole.observe(seconds)
        own.observe(max(seconds - call.seconds, 0.0))
        upstream.observe(call.seconds)
        if streamed:
            first_byte.observe(call.first_byte)
        usage = call.usage
        if usage is not None:
            if usage.prompt_tokens:
                tokens_in.inc(usage.prompt_tokens)
            if usage.completion_tokens:
                tokens_out.inc(usage.completion_tokens)

    def _bind(
        self,
        resource: AbstractResource | None,
        status: int,
        provider: str,
        model: str,
        call: UpstreamCall | None,
    ) -> tuple[Child, ...]:
        route = route_label(resource)
        bound = (
            self.requests.labels(route, provider, model, status_label(status)),
            self.request_seconds.labels(route, provider),
            self.proxy_seconds.labels(route, provider),
        )
        if call is None:
            return bound
        outcome = "ok" if call.ok else "error"
        return (
            *bound,
            self.upstream_seconds.labels(provider, model, outcome),
            # Bound only for streams: a plain call would leave an empty series behind.
            None if call.first_byte is None else self.first_byte_seconds.labels(provider, model),
            self.tokens.labels(provider, model, "in"),
            self.tokens.labels(provider, model, "out"),
        )

    def retry_counter(self, provider: str) -> Callable[[UpstreamError], None]:
        """`Upstream.on_retry` for one provider."""
        family = self.retries
        causes: dict[str, Child] = {}

        def count(error: UpstreamError) -> None:
            cause = retry_cause(error)
            child = causes.get(cause)
            if child is None:
                child = causes[cause] = family.labels(provider, cause)
            child.inc()

        return count

    def token_fetch_counter(self, provider: str) -> Callable[[bool], None]:
        """`TokenCache.on_fetch` for one provider: called with whether a token was held."""
        fetch = self.token_fetches.labels(provider, "fetch")
        refresh = self.token_fetches.labels(provider, "refresh")

        def count(replacing: bool) -> None:
            (refresh if replacing else fetch).inc()

        return count

    def stream_gauge(self, provider: str) -> Child:
        return self.streams.labels(provider)

    def _counter(self, name: str, documentation: str, labelnames: Sequence[str]) -> Any:
        if self._multiprocess:
            return Counter(name, documentation, labelnames, registry=self._registry)
        family = CounterFamily(name, documentation, labelnames)
        self._fast.append(family)
        return family

    def _histogram(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> Any:
        if self._multiprocess:
            return Histogram(
                name, documentation, labelnames, buckets=buckets, registry=self._registry
            )
        family = HistogramFamily(name, documentation, labelnames, buckets)
        self._fast.append(family)
        return family
