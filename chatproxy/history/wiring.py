"""Opens the history store HISTORY_STORE names for the app's lifetime, when it names one."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from yarl import URL

from chatproxy.history.layer import HistoryLayer
from chatproxy.keys import HISTORY, SETTINGS

log = logging.getLogger(__name__)


def describe(url: str) -> str:
    """The store's URL fit to show: no user or password."""
    parsed = URL(url)
    return str(parsed.with_user(None)) if parsed.user or parsed.password else url


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
