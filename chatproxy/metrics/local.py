"""The local engine's state, read when Prometheus scrapes (nothing on the generation path)."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chatproxy.keys import PROVIDERS


class LocalEngineCollector(Collector):
    """Queue depth, batch size, tokens/s and tokens generated, from the local client's
    `status()`; nothing when the local provider is off. A local model runs in one serving
    process only, so these need no multiprocess files."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterable[Metric]:
        providers = self.app.get(PROVIDERS)
        client = providers.clients.get("local") if providers is not None else None
        if client is None:
            return
        state = client.status()
        gauges = (
            ("chatproxy_local_queue_depth", "Requests waiting for the local model.", "queue_depth"),
            ("chatproxy_local_batch_size", "Requests in the batch generating now.", "batch_size"),
            (
                "chatproxy_local_tokens_per_second",
                "Tokens the local model generated per second, over the last 10 s.",
                "tokens_per_s",
            ),
        )
        for name, documentation, field in gauges:
            if field in state:
                yield GaugeMetricFamily(name, documentation, value=float(state[field]))
        if "tokens_generated" in state:
            yield CounterMetricFamily(
                "chatproxy_local_generated_tokens",
                "Tokens the local model generated.",
                value=float(state["tokens_generated"]),
            )
