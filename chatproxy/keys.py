"""Typed keys of everything shared through the `web.Application`."""

from __future__ import annotations

from aiohttp import web

from chatproxy.config import Settings
from chatproxy.drain import Drain
from chatproxy.history.layer import HistoryLayer
from chatproxy.keyring import KeyRing
from chatproxy.limits import Limits
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
# The client keys accepted now (PROXY_API_KEYS and PROXY_API_KEYS_FILE); SIGHUP reloads it.
API_KEYS = web.AppKey("api_keys", KeyRing)
# Only there when a limit is set (RATE_LIMIT_RPM/TPM, <PROVIDER>_MAX_CONCURRENCY).
LIMITS = web.AppKey("limits", Limits)
# ROOT_PATH as served: "" or "/prefix" without a trailing slash.
ROOT_PATH = web.AppKey("root_path", str)
