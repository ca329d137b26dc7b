"""The app's metrics: `setup_metrics`, `GET /metrics`, and the hooks of the request path."""

from __future__ import annotations

import os
from time import perf_counter
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.exposition import choose_encoder

from chatproxy.clients.auth import TokenCache
from chatproxy.clients.http import Upstream
from chatproxy.keys import HISTORY, PROVIDERS
from chatproxy.metrics.exchange import SERVER_TIMING, current_call, stream_timing, take_call
from chatproxy.metrics.families import Metrics
from chatproxy.metrics.local import LocalEngineCollector
from chatproxy.metrics.stores import meter_store
from chatproxy.openapi import Body, operation

METRICS = web.AppKey("metrics", Metrics)
# What `/metrics` renders: the app's own registry, or in multiprocess mode one that reads
# every serving process's files.
SCRAPE = web.AppKey("metrics_scrape", CollectorRegistry)


def multiprocess_dir() -> str | None:
    """prometheus-client's own switch: its values go to files in this folder when set."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def setup_metrics(app: web.Application) -> None:
    """Families on a registry of this app's own (tests build many apps), `/metrics`, and
    the start-up step that instruments the clients and the history store."""
    registry = CollectorRegistry()
    folder = multiprocess_dir()
    app[METRICS] = Metrics(registry, multiprocess=folder is not None)
    if folder:
        if not os.path.isdir(folder):
            raise SystemExit(
                f"chatproxy: PROMETHEUS_MULTIPROC_DIR={folder} is not a folder: make it (empty) "
                "or unset it"
            )
        scrape = CollectorRegistry()
        multiprocess.MultiProcessCollector(scrape, path=folder)  # type: ignore[no-untyped-call]
    else:
        scrape = registry
    scrape.register(LocalEngineCollector(app))
    app[SCRAPE] = scrape
    app.on_startup.append(instrument)
    app.router.add_get("/metrics", metrics_page)


@operation(
    "GET",
    "/metrics",
    "Prometheus metrics",
    "meta",
    responses={200: Body(media_type="text/plain", schema={"type": "string"})},
)
async def metrics_page(request: web.Request) -> web.Response:
    """Every `chatproxy_*` family in Prometheus' text format (OpenMetrics when asked for)."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(request.app[SCRAPE]), headers={"Content-Type": content_type})


async def instrument(app: web.Application) -> None:
    """After the providers and the history store opened: hand each what it counts with."""
    metrics = app[METRICS]
    providers = app.get(PROVIDERS)
    for name, client in providers.clients.items() if providers is not None else ():
        metrics.models.know(name, client.default_model)
        upstream = getattr(client, "upstream", None)
        if isinstance(upstream, Upstream):
            upstream.on_retry = metrics.retry_counter(name)
        tokens = getattr(client, "tokens", None)
        if isinstance(tokens, TokenCache):
            tokens.on_fetch = metrics.token_fetch_counter(name)
    history = app.get(HISTORY)
    if history is not None:
        meter_store(history.store, metrics)


def observe_request(request: web.Request, status: int, started: float) -> None:
    """The request middleware's hook, at the request's end (`started`: its perf_counter)."""
    call = take_call()
    metrics = request.app.get(METRICS)
    if metrics is not None:
        resource = request.match_info.route.resource
        metrics.observe(resource, status, perf_counter() - started, call)


class InFlightGauge(Protocol):
    def dec(self) -> None: ...


class _Uncounted:
    def dec(self) -> None:
        pass


def stream_timing_header(response: web.StreamResponse) -> None:
    """The stream relay's hook before its first byte: what `Server-Timing` can say yet."""
    timing = stream_timing()
    if timing is not None:
        response.headers[SERVER_TIMING] = timing


def stream_in_flight(request: web.Request) -> InFlightGauge:
    """The stream relay's hook once the stream is open: one more stream in flight, until
    the caller decrements the gauge it gets back."""
    metrics = request.app.get(METRICS)
    call = current_call()
    if metrics is None or call is None:
        return _Uncounted()
    gauge = metrics.stream_gauge(call.provider)
    gauge.inc()
    return gauge  # type: ignore[no-any-return]
