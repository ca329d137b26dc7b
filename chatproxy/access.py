"""Who a request acts for: the owner of the conversations it may see."""

from __future__ import annotations

import hashlib

from aiohttp import web

from chatproxy.keys import SETTINGS


def client_owner(request: web.Request) -> str:
    """A hash of the client's API key (the key middleware checked it), so a conversation
    belongs to the key that made it; "" when no keys are configured and all are one client.
    A hash, not the key: the owner is stored beside the conversation."""
    if not request.app[SETTINGS].api_keys:
        return ""
    presented = request.headers.get("Authorization", "").partition(" ")[2].strip()
    return hashlib.sha256(presented.encode()).hexdigest()[:32]
