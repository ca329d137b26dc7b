"""Typed keys of everything shared through the `web.Application`."""

from __future__ import annotations

from aiohttp import web

from chatproxy.config import Settings
from chatproxy.drain import Drain
from chatproxy.history.layer import HistoryLayer
from chatproxy.providers import Providers
from chatproxy.redact import Redactor

SETTINGS = web.AppKey("settings", Settings)
PROVIDERS = web.AppKey("providers", Providers)
REDACTOR = web.AppKey("redactor", Redactor)
STARTED = web.AppKey("started", float)
# Only there when HISTORY_STORE is set: `app.get(HISTORY)` is None on a stateless server.
HISTORY = web.AppKey("history", HistoryLayer)
# Only there when chatproxy.server serves the app (not in tests that build it directly).
DRAIN = web.AppKey("drain", Drain)
