"""The HTTP calls `chatproxy chat` makes to a running chatproxy, and the errors they end in."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp


class ServerError(Exception):
    """chatproxy answered with an error: its status and the message of its JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"[{status}] {message}")
        self.status = status
        self.message = message


class Unreachable(Exception):
    """No answer from chatproxy at all (refused, reset, a bad address)."""


@dataclass(slots=True)
class ModelChoices:
    """What `GET /{provider}/models` says: the default and the offered names."""

    default: str
    names: list[str]


def error_message(body: bytes) -> str:
    """The human part of an error body: native `{"error": str}`, OpenAI's
    `{"error": {"message"}}`, or the text itself when it is not JSON."""
    text = body.decode(errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        return text or "(empty answer)"
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return str(error) if error else text


def describe(exc: aiohttp.ClientError, url: str) -> str:
    """One line for a failed connection, without aiohttp's nested reprs."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        number = exc.os_error.errno
        reason = os.strerror(number).lower() if number else str(exc.os_error)
        return f"cannot reach chatproxy at {url}: {reason}"
    return f"lost the connection to chatproxy at {url}: {exc or type(exc).__name__}"


class ServerApi:
    """chatproxy's routes as the terminal client uses them."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url.rstrip("/")

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            async with self.http.request(method, self.url + path, **kwargs) as resp:
                status, body = resp.status, await resp.read()
        except aiohttp.ClientError as exc:
            raise Unreachable(describe(exc, self.url)) from None
        if status >= 400:
            raise ServerError(status, error_message(body))
        try:
            return json.loads(body)
        except ValueError:
            raise ServerError(status, "the answer is not JSON") from None

    async def providers(self) -> list[str]:
        """The providers this chatproxy serves, in its order."""
        cards = (await self._json("GET", "/models")).get("data", [])
        return list(dict.fromkeys(str(card["provider"]) for card in cards if "provider" in card))

    async def models(self, provider: str) -> ModelChoices:
        body = await self._json("GET", f"/{quote(provider, safe='')}/models")
        return ModelChoices(str(body["default_model"]), [str(name) for name in body["models"]])

    async def status(self) -> dict[str, Any]:
        body: dict[str, Any] = await self._json("GET", "/status")
        return body

    async def create_conversation(self) -> str | None:
        """A new server-side conversation's id; None when the history layer is off."""
        try:
            body = await self._json("POST", "/history")
        except ServerError as exc:
            if exc.status == 404:
                return None
            raise
        return str(body["conversation_id"])

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self._json("GET", f"/history/{quote(conversation_id)}")
        return body

    async def history_enabled(self) -> bool:
        history = (await self.status()).get("history") or {}
        return bool(history.get("enabled"))

    async def chat_events(
        self, provider: str, body: dict[str, Any]
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """A streamed reply as (event, data) pairs: delta, done or error."""
        path = f"{self.url}/{quote(provider, safe='')}/"
        try:
            async with self.http.post(path, json=body) as resp:
                if resp.status != 200:
                    raise ServerError(resp.status, error_message(await resp.read()))
                event = ""
                async for line in sse_lines(resp.content):
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        yield event, event_data(line[6:])
        except aiohttp.ClientError as exc:
            raise Unreachable(describe(exc, self.url)) from None


async def sse_lines(content: aiohttp.StreamReader) -> AsyncGenerator[str, None]:
    """The stream's lines, however long: a `done` event carries the whole conversation
    kept here, one line that outgrows aiohttp's own line reader (512 KiB) after long
    pastes, where that reader raises instead of reading on."""
    pending: list[bytes] = []  # a line's start, in pieces: joined once, when it ends
    async for chunk in content.iter_any():
        *lines, rest = chunk.split(b"\n")
        if lines:
            lines[0] = b"".join((*pending, lines[0]))
            pending.clear()
            for line in lines:
                yield line.decode(errors="replace").rstrip("\r")
        if rest:
            pending.append(rest)
    if pending:
        yield b"".join(pending).decode(errors="replace").rstrip("\r")


def event_data(text: str) -> dict[str, Any]:
    """An event's JSON object; something else means what answered is no chatproxy."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ServerError(200, "the reply stream holds an event that is not a JSON object")
    return data
