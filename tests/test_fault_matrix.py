"""The fault matrix: every hostile upstream answer x provider x plain/stream x route.

Each case checks the designed status (or an error event once a stream began), that the
answer comes within the timeout, that no secret or issued token leaks, never a 500, and
that the next request on the same app succeeds once the fault is gone."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import AiohttpClient, AiohttpServer, Client, make_settings, serve, started
from tests.fakes.faulty import (
    CHAT_PREFIX,
    ECHO,
    ERNIE_API_KEY,
    ERNIE_SECRET_KEY,
    FAULTS,
    GIGACHAT_CREDENTIALS,
    GIGACHAT_SCOPE,
    GIGACHAT_SECRET,
    MESSAGE,
    OPENAI_KEY,
    REPLY,
    RETRY_AFTER,
    FaultyUpstream,
)

PROVIDERS = ("chatgpt", "gigachat", "ernie")
MODELS = {"chatgpt": "gpt-4o-mini", "gigachat": "GigaChat", "ernie": "ernie-speed-128k"}
SECRETS = (OPENAI_KEY, GIGACHAT_CREDENTIALS, GIGACHAT_SECRET, ERNIE_API_KEY, ERNIE_SECRET_KEY)
TIMEOUT = 1.0  # UPSTREAM_TIMEOUT: every answer, hangs included, comes within it
READ_TIMEOUT = 0.5
SLACK = 1.0
USER = {"role": "user", "content": "hi"}


@dataclass(frozen=True, slots=True)
class Expect:
    """What chatproxy must answer: `status` 200 means a stream that ends in an error event."""

    status: int
    type: str | None = None  # None: any upstream_* type
    message: str | None = None  # part of the upstream's message that must reach the client
    retry_after: str | None = None
    retried: bool = False


def expect(fault: str, stream: bool) -> Expect:
    """The designed answer (DESIGN.md "Errors", "Contract details") to `fault`."""
    broke = 200 if stream else None  # after the first relayed chunk: an error event
    if fault.startswith("http_") or fault == "html_502":
        return Expect(502, retried=True)
    if fault.startswith("rate_limit"):
        after = RETRY_AFTER if fault.endswith("retry_after") else None
        return Expect(429, "rate_limit_exceeded", retry_after=after, retried=True)
    if fault in ("ernie_18", "ernie_336501"):
        return Expect(429, "rate_limit_exceeded")
    if fault == "ernie_336003":
        return Expect(400, "invalid_request_error", MESSAGE)
    if fault == "refused":
        return Expect(502, "upstream_connection_error")
    if fault == "reset":
        return Expect(broke or 502, "upstream_connection_error", retried=not stream)
    if fault in ("hang_headers", "hang_body"):
        return Expect(504, "upstream_timeout")
    if fault in ("hang_mid", "endless"):
        return Expect(broke or 504, "upstream_timeout")
    if fault in ("truncated", "huge", "usage_str"):
        return Expect(broke or 502)
    if fault in ("html_200", "choices_5", "event_list"):  # bad from the first byte
        return Expect(502)
    if fault == "error_200":
        return Expect(broke or 502, message=MESSAGE)
    if fault == "json_error_200":
        return Expect(502, message=MESSAGE)
    if fault == "echo_400":
        return Expect(400, "invalid_request_error", ECHO)
    if fault == "echo_401":
        return Expect(502, "upstream_auth_error")
    if fault == "echo_503":
        return Expect(502, message=ECHO, retried=True)
    if fault == "echo_200":
        return Expect(broke or 502, message=ECHO)
    raise AssertionError(f"no expectation for {fault}")


def applies(fault: str, provider: str, stream: bool) -> bool:
    if fault.startswith("ernie_"):
        return provider == "ernie"
    return stream or fault != "json_error_200"  # plain, it is error_200 again


CASES = [
    pytest.param(provider, route, stream, fault, id=f"{provider}-{route}-{mode}-{fault}")
    for fault in FAULTS
    for provider in PROVIDERS
    for route in ("native", "v1")
    for stream, mode in ((False, "plain"), (True, "stream"))
    if applies(fault, provider, stream)
]


class Gate:
    """A port bound but not listening, so connections are refused, until `open` serves."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.runner: web.AppRunner | None = None

    async def open(self, app: web.Application) -> None:
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        self.sock.close()


def settings_for(provider: str, chat_base: str, auth_base: str) -> dict[str, Any]:
    """One provider on, its chat at `chat_base`, its token endpoint at `auth_base`."""
    values: dict[str, Any] = {
        "default_provider": provider,
        "upstream_timeout": TIMEOUT,
        "upstream_read_timeout": READ_TIMEOUT,
        "upstream_retries": 1,
        "max_upstream_body_bytes": 1 << 20,
    }
    if provider == "chatgpt":
        return {**values, "openai_api_key": OPENAI_KEY, "openai_base_url": f"{chat_base}/v1"}
    if provider == "gigachat":
        return {
            **values,
            "gigachat_credentials": GIGACHAT_CREDENTIALS,
            "gigachat_scope": GIGACHAT_SCOPE,
            "gigachat_auth_url": f"{auth_base}/api/v2/oauth",
            "gigachat_base_url": f"{chat_base}/api/v1",
        }
    return {
        **values,
        "ernie_api_key": ERNIE_API_KEY,
        "ernie_secret_key": ERNIE_SECRET_KEY,
        "ernie_auth_url": f"{auth_base}/oauth/2.0/token",
        "ernie_base_url": f"{chat_base}{CHAT_PREFIX}",
    }


@dataclass(slots=True)
class Answer:
    resp: aiohttp.ClientResponse
    raw: bytes
    elapsed: float

    def show(self) -> str:
        return f"HTTP {self.resp.status} {self.raw[:400]!r}"


async def ask(client: Client, provider: str, route: str, stream: bool) -> Answer:
    if route == "native":
        path, body = f"/{provider}/", {"messages": [USER], "stream": stream}
    else:
        model = f"{provider}/{MODELS[provider]}"
        path, body = "/v1/chat/completions", {"model": model, "messages": [USER], "stream": stream}
    started_at = time.monotonic()
    resp = await client.post(path, json=body, timeout=aiohttp.ClientTimeout(total=20))
    raw = await resp.read()
    return Answer(resp, raw, time.monotonic() - started_at)


def events_of(raw: bytes) -> list[tuple[str, Any]]:
    """(event, data) pairs of an SSE body; data parsed as JSON where it is JSON."""
    out: list[tuple[str, Any]] = []
    for block in raw.decode("utf-8", "replace").split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        text = "\n".join(data)
        try:
            out.append((name, json.loads(text)))
        except ValueError:
            out.append((name, text))
    return out


def error_of(payload: Any, route: str) -> tuple[str, str]:
    """(message, type) of a native `{"error", "type"}` or a /v1 `{"error": {...}}` object."""
    assert isinstance(payload, dict), payload
    if route == "v1":
        error = payload.get("error")
        assert isinstance(error, dict) and {"message", "type", "code"} <= error.keys(), payload
        return str(error["message"]), str(error["type"])
    assert isinstance(payload.get("error"), str) and isinstance(payload.get("type"), str), payload
    return payload["error"], payload["type"]


def stream_error(answer: Answer, route: str) -> tuple[str, str]:
    """The error a 200 stream ends with, after which nothing else may come."""
    assert answer.resp.status == 200, f"wanted a stream that ends in an error: {answer.show()}"
    assert answer.resp.content_type == "text/event-stream", answer.show()
    events = events_of(answer.raw)
    if route == "native":
        assert events and events[-1][0] == "error", f"no final error event: {events[-3:]}"
        assert not any(name == "done" for name, _ in events), events[-3:]
        return error_of(events[-1][1], route)
    assert len(events) >= 2 and events[-1] == ("message", "[DONE]"), events[-3:]
    return error_of(events[-2][1], route)


def check_error(answer: Answer, route: str, want: Expect) -> None:
    assert answer.resp.status != 500, answer.show()
    if want.status == 200:
        message, kind = stream_error(answer, route)
        assert kind != "internal_error", message
    else:
        assert answer.resp.status == want.status, f"wanted {want.status}: {answer.show()}"
        assert answer.resp.content_type == "application/json", answer.show()
        message, kind = error_of(json.loads(answer.raw), route)
        if want.retry_after is not None:
            assert answer.resp.headers.get("Retry-After") == want.retry_after
    if want.type is not None:
        assert kind == want.type, f"type {kind!r}, wanted {want.type!r}: {message}"
    else:
        assert kind.startswith("upstream_"), f"type {kind!r}: {message}"
    if want.message is not None:
        assert want.message in message, f"the upstream's message is lost: {message!r}"


def leaks(answer: Answer, fake: FaultyUpstream) -> list[str]:
    """Configured secrets and issued tokens found in the answer's body or headers."""
    headers = "\n".join(f"{name}: {value}" for name, value in answer.resp.headers.items())
    text = answer.raw.decode("utf-8", "replace") + "\n" + headers
    return [secret for secret in (*SECRETS, *fake.tokens_issued) if secret in text]


def check_success(answer: Answer, route: str, stream: bool) -> None:
    assert answer.resp.status == 200, f"no recovery after the fault: {answer.show()}"
    if stream:
        events = events_of(answer.raw)
        if route == "native":
            assert events[-1][0] == "done", events[-3:]
            assert events[-1][1]["messages"][-1]["content"] == REPLY
        else:
            assert events[-1] == ("message", "[DONE]"), events[-3:]
            assert not any(isinstance(d, dict) and "error" in d for _, d in events), events
        return
    body = json.loads(answer.raw)
    if route == "native":
        assert body["messages"][-1]["content"] == REPLY
    else:
        assert body["choices"][0]["message"]["content"] == REPLY


@pytest.mark.parametrize(("provider", "route", "stream", "fault"), CASES)
async def test_fault(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    provider: str,
    route: str,
    stream: bool,
    fault: str,
) -> None:
    fake = await started(aiohttp_server, FaultyUpstream())
    gate = Gate() if fault == "refused" else None
    try:
        chat_base = gate.base if gate is not None else fake.base
        client = await serve(
            aiohttp_client, make_settings(**settings_for(provider, chat_base, fake.base))
        )
        fake.fault = fault
        answer = await ask(client, provider, route, stream)
        want = expect(fault, stream)
        assert not leaks(answer, fake), f"secrets leaked: {answer.show()}"
        check_error(answer, route, want)
        assert answer.elapsed < TIMEOUT + SLACK, f"took {answer.elapsed:.2f}s"
        if want.retried:
            assert fake.chat_calls == 2, f"{fake.chat_calls} chat calls; 5xx/429 are retried once"

        fake.fault = None
        if gate is not None:
            await gate.open(fake.app())
        answer = await ask(client, provider, route, stream)
        check_success(answer, route, stream)
        assert not leaks(answer, fake)
    finally:
        if gate is not None:
            await gate.close()


async def test_ernie_model_cannot_leave_the_chat_path(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    """A model name is an endpoint path segment: `..` must not walk out of the chat prefix."""
    fake = await started(aiohttp_server, FaultyUpstream())
    settings = make_settings(**settings_for("ernie", fake.base, fake.base))
    client = await serve(aiohttp_client, settings)
    for model in ("../../../../../v1/models", "a/../../../../../../oauth/2.0/token", "x/../y"):
        resp = await client.post("/ernie/", json={"model": model, "messages": [USER]})
        assert resp.status != 500, await resp.text()
    root = CHAT_PREFIX + "/"
    token = "/oauth/2.0/token"
    inside = [p for p in fake.paths if p.startswith(root) and "/" not in p.removeprefix(root)]
    assert len(inside) + fake.paths.count(token) == len(fake.paths), fake.paths
    assert fake.paths.count(token) <= 1, f"a model reached the token endpoint: {fake.paths}"
