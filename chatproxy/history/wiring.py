"""Opens the history store HISTORY_STORE names for the app's lifetime, when it names one."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from chatproxy.history.layer import HistoryLayer
from chatproxy.keys import HISTORY, SETTINGS

log = logging.getLogger(__name__)


def describe(url: str) -> str:
    """The store's URL fit to show: scheme, host, port and path, nothing else (a user, a
    password, and a query, which may hold `?password=` too)."""
    scheme, _, rest = url.partition("://")
    location, slash, path = rest.partition("/")
    host = location.rpartition("@")[2]
    path = path.split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{host}{slash}{path}"


async def history_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.history_store is None:
        yield
        return
    from chatproxy.history.url import open_store  # a stateless server never loads it

    url = settings.history_store.get_secret_value()
    try:
        store = open_store(url, ttl=settings.history_ttl, timeout=settings.history_timeout)
    except ValueError as exc:
        raise SystemExit(f"chatproxy: HISTORY_STORE: {exc}") from None
    layer = HistoryLayer(store, max_turns=settings.history_max_turns, description=describe(url))
    await layer.open()
    app[HISTORY] = layer
    log.info(
        "history kept in %s (the last %d turns go upstream)",
        layer.description,
        settings.history_max_turns,
    )
    try:
        yield
    finally:
        await layer.close()
