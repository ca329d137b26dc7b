"""The provider registry: which clients exist, why the others don't, and cached model lists."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from chatproxy.clients.base import ChatClient
from chatproxy.config import PROVIDER_NAMES
from chatproxy.errors import NotFoundError, ServiceUnavailableError


def unknown_provider_error(name: str) -> NotFoundError:
    return NotFoundError(
        f"unknown provider '{name}'; known providers: {', '.join(PROVIDER_NAMES)}", param="provider"
    )


class ModelsCache:
    """Upstream model lists kept for `ttl` seconds; concurrent misses share one fetch."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, list[str]]] = {}
        self._pending: dict[str, asyncio.Task[list[str]]] = {}

    async def get(self, client: ChatClient) -> list[str]:
        entry = self._entries.get(client.name)
        if entry is not None and time.monotonic() - entry[0] < self.ttl:
            return entry[1]
        task = self._pending.get(client.name)
        if task is None:
            task = asyncio.ensure_future(client.models())
            self._pending[client.name] = task
            task.add_done_callback(lambda _: self._pending.pop(client.name, None))
        models = await asyncio.shield(task)
        self._entries[client.name] = (time.monotonic(), models)
        return models


class InFlight:
    """Counts requests in flight for `/status`. It keeps no state per use, so one instance
    per provider serves every request (a plain class: cheaper than a generator)."""

    __slots__ = ("counts", "name")

    def __init__(self, counts: dict[str, int], name: str) -> None:
        self.counts = counts
        self.name = name

    def __enter__(self) -> None:
        self.counts[self.name] += 1

    def __exit__(self, *exc: object) -> None:
        self.counts[self.name] -= 1


class Providers:
    """Configured clients by name, and for the others the reason they are off."""

    def __init__(self, *, models_ttl: float) -> None:
        self.clients: dict[str, ChatClient] = {}
        self.missing: dict[str, str] = {}
        self.in_flight: dict[str, int] = dict.fromkeys(PROVIDER_NAMES, 0)
        self._trackers = {name: InFlight(self.in_flight, name) for name in PROVIDER_NAMES}
        self.models_cache = ModelsCache(models_ttl)
        self.shutting_down = False

    def add(self, client: ChatClient) -> None:
        self.clients[client.name] = client

    def get(self, name: str) -> ChatClient:
        """A client that can serve now, or the error saying why not."""
        client = self.clients.get(name)
        if client is None and name not in PROVIDER_NAMES:
            raise unknown_provider_error(name)
        if self.shutting_down:
            raise ServiceUnavailableError("chatproxy is shutting down", retry_after=1)
        if client is None:
            raise ServiceUnavailableError(
                f"provider '{name}' is not configured: {self.missing.get(name, 'disabled')}"
            )
        reason = client.not_ready_reason()
        if reason is not None:
            raise ServiceUnavailableError(
                f"provider '{name}' cannot serve yet: {reason}", retry_after=5
            )
        return client

    def track(self, name: str) -> InFlight:
        return self._trackers[name]

    def readiness(self) -> tuple[bool, dict[str, str]]:
        states: dict[str, str] = {}
        for name, client in self.clients.items():
            states[name] = client.not_ready_reason() or "ok"
        ready = bool(states) and all(s == "ok" for s in states.values())
        if self.shutting_down:
            states["server"] = "shutting down"
            ready = False
        elif not states:
            states["server"] = "no provider is configured"
        return ready, states

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in PROVIDER_NAMES:
            client = self.clients.get(name)
            entry: dict[str, Any] = {
                "configured": client is not None,
                "in_flight": self.in_flight[name],
            }
            if client is None:
                entry["reason"] = self.missing.get(name, "disabled")
            else:
                entry["default_model"] = client.default_model
                entry["ready"] = client.not_ready_reason() is None
                entry.update(client.status())
            out[name] = entry
        return out

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients.values()), return_exceptions=True)
