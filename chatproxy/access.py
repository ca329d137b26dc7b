"""Who a request acts for: its client key (loaded, reloaded on SIGHUP) and the owner of the
conversations it may see."""

from __future__ import annotations

import hashlib
import logging

from aiohttp import web

from chatproxy.config import Settings
from chatproxy.keyring import KeyFileError, KeyRing, key_id, read_key_file
from chatproxy.keys import API_KEYS, REDACTOR, SETTINGS
from chatproxy.redact import Redactor

__all__ = ["client_owner", "key_id", "load_api_keys", "presented_key", "reload_api_keys"]

# Not "chatproxy.access": that is the access line's logger.
log = logging.getLogger("chatproxy.keys")


def presented_key(request: web.Request) -> str:
    """The key after `Bearer ` (the key middleware has checked it when keys are on)."""
    return request.headers.get("Authorization", "").partition(" ")[2].strip()


def client_owner(request: web.Request) -> str:
    """A hash of the client's API key (the key middleware checked it), so a conversation
    belongs to the key that made it; "" when no keys are configured and all are one client.
    A hash, not the key: the owner is stored beside the conversation."""
    if not request.app[API_KEYS]:
        return ""
    return hashlib.sha256(presented_key(request).encode()).hexdigest()[:32]


def configured_keys(settings: Settings) -> frozenset[str]:
    """PROXY_API_KEYS and the keys in PROXY_API_KEYS_FILE; KeyFileError when it is unreadable."""
    path = settings.proxy_api_keys_file
    return settings.api_keys | (read_key_file(path) if path is not None else frozenset())


def load_api_keys(settings: Settings, redactor: Redactor) -> KeyRing:
    """The keys at start: a key file that cannot be read stops the start (one line, as
    every configuration error), rather than serving without the keys it was meant to hold."""
    try:
        keys = configured_keys(settings)
    except KeyFileError as exc:
        raise SystemExit(f"chatproxy: PROXY_API_KEYS_FILE: {exc}") from None
    redactor.learn(keys)
    from_file = settings.proxy_api_keys_file is not None
    if from_file and not keys:
        log.warning("PROXY_API_KEYS_FILE holds no keys: no key is accepted until it does")
    return KeyRing(keys, required=from_file)


def reload_api_keys(app: web.Application) -> None:
    """SIGHUP: read the keys again. A file that cannot be read keeps the keys in use."""
    settings, ring = app[SETTINGS], app[API_KEYS]
    if settings.proxy_api_keys_file is None:
        log.info("SIGHUP: no PROXY_API_KEYS_FILE to re-read")
        return
    try:
        keys = configured_keys(settings)
    except KeyFileError as exc:
        log.warning("PROXY_API_KEYS_FILE not reloaded, the keys in use stay: %s", exc)
        return
    # Learnt before they are accepted: no line about a new key may precede its redaction.
    app[REDACTOR].learn(keys)
    added = sorted(key_id(key) for key in keys - ring.keys)
    removed = sorted(key_id(key) for key in ring.keys - keys)
    ring.keys = keys
    if not keys:
        log.warning("PROXY_API_KEYS_FILE holds no keys now: no key is accepted until it does")
    log.info(
        "PROXY_API_KEYS_FILE reloaded: %d key(s); added %s; removed %s",
        len(keys),
        ", ".join(added) or "none",
        ", ".join(removed) or "none",
    )
