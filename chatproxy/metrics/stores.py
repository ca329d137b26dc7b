"""Counts and times every operation of the history store, on the store itself."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from chatproxy.history.base import HistoryStore
from chatproxy.metrics.families import Metrics

Operation = Callable[..., Awaitable[Any]]
UNMETERED = frozenset({"close"})


def meter_store(store: HistoryStore, metrics: Metrics) -> None:
    """Wrap each operation `HistoryStore` declares on this instance, so that the layer, the
    routes that call the store directly, and the store's own composite operations (a fork
    built of creates and appends) all pass the meter; an operation added later is metered
    too. A second call changes nothing."""
    for name, _ in inspect.getmembers(HistoryStore, inspect.iscoroutinefunction):
        if name.startswith("_") or name in UNMETERED or name in vars(store):
            continue
        setattr(store, name, _metered(name, getattr(store, name), metrics))


def _metered(name: str, operation: Operation, metrics: Metrics) -> Operation:
    ok = metrics.history_operations.labels(name, "ok")
    failed = metrics.history_operations.labels(name, "error")
    seconds = metrics.history_seconds.labels(name)

    @functools.wraps(operation)
    async def metered(*args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        try:
            result = await operation(*args, **kwargs)
        except BaseException:
            failed.inc()
            raise
        finally:
            seconds.observe(perf_counter() - started)
        ok.inc()
        return result

    return metered
