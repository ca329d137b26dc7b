"""Counters and histograms for one serving process, at a tenth of prometheus-client's cost.

prometheus-client's children take a lock and make several calls per update (0.9 µs for a
histogram observation, 0.3 µs for a counter, against 0.1 µs and 0.03 µs here), and a request
updates up to seven: with them, metrics cost twice the instructions per request. These are
plain attributes updated on the event loop, the only thread that touches them, rendered by
prometheus-client through a custom collector. In multiprocess mode
(PROMETHEUS_MULTIPROC_DIR) prometheus-client's own families are used instead: their values
must reach the shared files.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from math import inf

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative: one index per observe
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # The first bucket whose upper bound is >= amount; the last bound is +Inf.
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class CounterFamily:
    """`labels(...)` as prometheus-client's `Counter` has it; children live as long as it."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], CounterChild] = {}

    def labels(self, *values: str) -> CounterChild:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = CounterChild()
        return child

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            family.add_metric(list(values), child.value)
        return family


class HistogramFamily:
    """`labels(...)` as prometheus-client's `Histogram` has it."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = (*sorted(float(b) for b in buckets if b != inf), inf)
        self.children: dict[tuple[str, ...], HistogramChild] = {}

    def labels(self, *values: str) -> HistogramChild:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = HistogramChild(self.bounds)
        return child

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            cumulative, buckets = 0, []
            for bound, count in zip(self.bounds, child.counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
            family.add_metric(list(values), buckets, child.sum)
        return family


class FamiliesCollector(Collector):
    """Renders the fast families of one app's `Metrics`."""

    def __init__(self, families: Iterable[CounterFamily | HistogramFamily]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return [family.collect() for family in self.families]
