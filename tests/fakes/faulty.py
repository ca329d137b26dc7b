"""One fake upstream speaking OpenAI's, GigaChat's and ERNIE's protocols that misbehaves on
command: set `fault` to one of FAULTS and every chat request suffers it until it is None."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

OPENAI_KEY = f"sk-faulty-{secrets.token_hex(12)}"
GIGACHAT_SECRET = f"giga-secret-{secrets.token_hex(8)}"
GIGACHAT_CREDENTIALS = base64.b64encode(f"giga-client:{GIGACHAT_SECRET}".encode()).decode()
GIGACHAT_SCOPE = "GIGACHAT_API_PERS"
ERNIE_API_KEY = f"ernie-api-{secrets.token_hex(8)}"
ERNIE_SECRET_KEY = f"ernie-secret-{secrets.token_hex(8)}"
CHAT_PREFIX = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat"
REPLY = "Hello from the faulty upstream"
# What an error body says, so a test can find it in chatproxy's answer.
MESSAGE = "the upstream exploded (marker 7f3a)"
ECHO = "Incorrect credential provided:"
RETRY_AFTER = "7"
HANG = 30.0  # long past any test timeout; a cancelled handler stops sooner
HUGE = 50 * 1024 * 1024
PIECE = b"a" * 65536

FAULTS = (
    "http_500", "http_502", "http_503", "rate_limit", "rate_limit_retry_after",
    "refused",  # the test points the provider at a closed port; the fake itself behaves
    "reset", "hang_headers", "hang_body", "hang_mid", "truncated", "html_200", "html_502",
    "error_200", "json_error_200", "ernie_18", "ernie_336501", "ernie_336003",
    "endless", "huge", "echo_400", "echo_401", "echo_503", "echo_200",
    "choices_5", "usage_str", "event_list",
)  # fmt: skip


def sse(event: Any) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


@dataclass
class Exchange:
    """One chat request being answered: its dialect, whether it streams, its credential."""

    request: web.Request
    dialect: str  # "openai", "gigachat" or "ernie"
    stream: bool
    credential: str

    def error(self, message: str, code: int = 336100) -> dict[str, Any]:
        """The dialect's error object, as it appears inside a 200 or as a stream event."""
        if self.dialect == "ernie":
            return {"error_code": code, "error_msg": message}
        return {"error": {"message": message, "type": "server_error", "code": None}}

    def status_body(self, status: int, message: str) -> dict[str, Any]:
        if self.dialect == "gigachat":
            return {"status": status, "message": message}
        return self.error(message, status)

    def answer(self, **changes: Any) -> dict[str, Any]:
        usage = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
        if self.dialect == "ernie":
            body: dict[str, Any] = {
                "id": "as-1", "object": "chat.completion", "created": int(time.time()),
                "result": REPLY, "is_truncated": False, "need_clear_history": False,
                "usage": usage,
            }  # fmt: skip
        else:
            message = {"role": "assistant", "content": REPLY}
            body = {
                "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                "model": "GigaChat" if self.dialect == "gigachat" else "gpt-4o-mini",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }  # fmt: skip
        return {**body, **changes}

    def chunk(self, text: str, last: bool = False, **changes: Any) -> dict[str, Any]:
        usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
        if self.dialect == "ernie":
            event: dict[str, Any] = {"id": "as-1", "result": text, "is_end": last}
            if last:
                event.update(is_truncated=False, usage=usage)
        else:
            choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
            event = {"id": "c1", "object": "chat.completion.chunk", "choices": [choice]}
            if last:
                choice["finish_reason"] = "stop"
                event["usage"] = usage
        return {**event, **changes}

    def events(self) -> list[bytes]:
        """A whole good stream, terminator included."""
        half = len(REPLY) // 2
        out = [sse(self.chunk(REPLY[:half])), sse(self.chunk(REPLY[half:], last=True))]
        return out if self.dialect == "ernie" else [*out, b"data: [DONE]\n\n"]

    async def start(self, status: int = 200, content_type: str | None = None) -> web.StreamResponse:
        kind = content_type or ("text/event-stream" if self.stream else "application/json")
        resp = web.StreamResponse(status=status, headers={"Content-Type": kind})
        await resp.prepare(self.request)
        return resp

    def json(self, body: Any, status: int = 200, **headers: str) -> web.Response:
        return web.json_response(body, status=status, headers=headers or None)


async def write_all(resp: web.StreamResponse, parts: list[bytes]) -> web.StreamResponse:
    try:
        for part in parts:
            await resp.write(part)
    except ConnectionError:
        pass  # chatproxy hung up, as it should on a hostile answer
    return resp


async def misbehave(fault: str, x: Exchange) -> web.StreamResponse:
    """The answer `fault` calls for."""
    if fault.startswith("http_"):
        status = int(fault[5:])
        return x.json(x.status_body(status, MESSAGE), status)
    if fault.startswith("rate_limit"):
        extra = {"Retry-After": RETRY_AFTER} if fault.endswith("retry_after") else {}
        return x.json(x.status_body(429, "slow down"), 429, **extra)
    if fault.startswith("echo_"):
        text = f"{ECHO} {x.credential}; {MESSAGE}"
        if fault != "echo_200":
            status = int(fault[5:])
            return x.json(x.status_body(status, text), status)
        if not x.stream:
            return x.json(x.error(text))
        return await write_all(await x.start(), [x.events()[0], sse(x.error(text))])
    if fault.startswith("ernie_"):  # ERNIE's own codes, at 200, to a stream request too
        return x.json(x.error(MESSAGE, int(fault[6:])))
    if fault == "error_200":
        if not x.stream:
            return x.json(x.error(MESSAGE))
        return await write_all(await x.start(), [x.events()[0], sse(x.error(MESSAGE))])
    if fault == "json_error_200":
        return x.json(x.error(MESSAGE))
    if fault in ("html_200", "html_502"):
        page = "<html><head><title>Bad Gateway</title></head><body>nginx</body></html>"
        return web.Response(text=page, status=int(fault[5:]), content_type="text/html")
    if fault == "hang_headers":
        await asyncio.sleep(HANG)
        return x.json(x.answer())
    if fault == "hang_body":
        resp = await x.start()
        await asyncio.sleep(HANG)
        return resp
    first = x.events()[0] if x.stream else json.dumps(x.answer()).encode()[:40]
    if fault == "hang_mid":
        resp = await write_all(await x.start(), [first])
        await asyncio.sleep(HANG)
        return resp
    if fault == "reset":
        await write_all(await x.start(), [first])
        assert x.request.transport is not None
        x.request.transport.abort()
        raise asyncio.CancelledError
    if fault == "truncated":
        whole = json.dumps(x.chunk("x") if x.stream else x.answer()).encode()
        if not x.stream:
            return web.Response(body=whole[: len(whole) // 2], content_type="application/json")
        broken = b"data: " + whole[: len(whole) // 2] + b"\n\n"
        return await write_all(await x.start(), [x.events()[0], broken, *x.events()[1:]])
    if fault == "endless":
        return await endless(x)
    if fault == "huge":
        return await huge(x)
    return await malformed(fault, x)


async def endless(x: Exchange) -> web.StreamResponse:
    """Chunks forever at a model's pace: a stream that never ends, a body never complete."""
    resp = await x.start()
    head = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "'
    await write_all(resp, [] if x.stream else [head])
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        try:
            await resp.write(sse(x.chunk("la ")) if x.stream else b"la " * 30)
        except ConnectionError:
            break
        await asyncio.sleep(0.01)
    return resp


async def huge(x: Exchange) -> web.StreamResponse:
    """About 50 MB of valid-looking JSON in 64 KiB pieces, so the fake stays cheap."""
    resp = await x.start()
    rest: list[bytes] = []
    if x.stream:  # one good event, then one enormous one
        ernie = x.dialect == "ernie"
        key = b'"result": "' if ernie else b'"choices": [{"index": 0, "delta": {"content": "'
        head = x.events()[0] + b"data: {" + key
        tail = (b'", "is_end": false}' if ernie else b'"}}]}') + b"\n\n"
        rest = x.events()[1:]
    else:
        head, _, tail = json.dumps(x.answer()).encode().partition(json.dumps(REPLY).encode())
        head, tail = head + b'"', b'"' + tail
    return await write_all(resp, [head, *[PIECE] * (HUGE // len(PIECE)), tail, *rest])


async def malformed(fault: str, x: Exchange) -> web.StreamResponse:
    """Well-formed JSON of the wrong shape."""
    bad: Any
    if fault == "event_list":
        bad = [1, 2]
    elif fault == "choices_5":
        wrong: dict[str, Any] = {"result" if x.dialect == "ernie" else "choices": 5}
        bad = x.chunk("x", **wrong) if x.stream else x.answer(**wrong)
    elif fault == "usage_str":
        usage = {"prompt_tokens": "x", "completion_tokens": 2}
        if not x.stream:
            return x.json(x.answer(usage=usage))
        last = sse(x.chunk("!", last=True, usage=usage))
        return await write_all(await x.start(), [x.events()[0], last, *x.events()[2:]])
    else:
        raise ValueError(f"unknown fault {fault!r}")
    if not x.stream:
        return x.json(bad)
    return await write_all(await x.start(), [sse(bad), *x.events()])


@dataclass
class FaultyUpstream:
    """Serves all three providers at once; records every token it issues and path it sees."""

    base: str = ""
    fault: str | None = None
    tokens_issued: list[str] = field(default_factory=list)
    chat_calls: int = 0
    paths: list[str] = field(default_factory=list)
    _expiry: dict[str, float] = field(default_factory=dict)

    def _issue(self, prefix: str, ttl: float) -> str:
        token = f"{prefix}{secrets.token_urlsafe(24)}"
        self.tokens_issued.append(token)
        self._expiry[token] = time.time() + ttl
        return token

    def _valid(self, token: str) -> bool:
        return self._expiry.get(token, 0.0) > time.time()

    async def gigachat_token(self, request: web.Request) -> web.Response:
        try:
            uuid.UUID(request.headers.get("RqUID", ""), version=4)
        except ValueError:
            return web.json_response({"code": 5, "message": "RqUID is not a uuid4"}, status=400)
        if request.headers.get("Authorization") != f"Basic {GIGACHAT_CREDENTIALS}":
            return web.json_response({"code": 6, "message": "credentials mismatch"}, status=401)
        if (await request.post()).get("scope") != GIGACHAT_SCOPE:
            return web.json_response({"code": 7, "message": "scope mismatch"}, status=400)
        token = self._issue("giga-", 1800.0)
        expires_at = int(self._expiry[token] * 1000)
        return web.json_response({"access_token": token, "expires_at": expires_at})

    async def ernie_token(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if (
            query.get("client_id") != ERNIE_API_KEY
            or query.get("client_secret") != ERNIE_SECRET_KEY
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = self._issue("24.", 2_592_000.0)
        return web.json_response({"access_token": token, "expires_in": 2_592_000})

    def _bearer(self, request: web.Request) -> str:
        return request.headers.get("Authorization", "").removeprefix("Bearer ")

    async def openai_chat(self, request: web.Request) -> web.StreamResponse:
        if self._bearer(request) != OPENAI_KEY:
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        return await self._chat(request, "openai", OPENAI_KEY)

    async def gigachat_chat(self, request: web.Request) -> web.StreamResponse:
        token = self._bearer(request)
        if not self._valid(token):
            return web.json_response({"status": 401, "message": "Unauthorized"}, status=401)
        return await self._chat(request, "gigachat", token)

    async def ernie_chat(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("access_token", "")
        if not self._valid(token):
            return web.json_response({"error_code": 110, "error_msg": "Access token invalid"})
        return await self._chat(request, "ernie", token)

    async def _chat(
        self, request: web.Request, dialect: str, credential: str
    ) -> web.StreamResponse:
        self.chat_calls += 1
        body = await request.json()
        x = Exchange(request, dialect, bool(body.get("stream")), credential)
        if self.fault is not None and self.fault != "refused":
            return await misbehave(self.fault, x)
        if not x.stream:
            return x.json(x.answer())
        return await write_all(await x.start(), x.events())

    async def models(self, request: web.Request) -> web.Response:
        names = ["gpt-4o-mini"] if request.path.startswith("/v1") else ["GigaChat", "GigaChat-Pro"]
        data = [{"id": name, "object": "model", "owned_by": "faulty"} for name in names]
        return web.json_response({"object": "list", "data": data})

    async def unknown(self, request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "no such route"}}, status=404)

    @web.middleware
    async def record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.paths.append(request.rel_url.raw_path)
        response: web.StreamResponse = await handler(request)
        return response

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.record])
        app.router.add_post("/v1/chat/completions", self.openai_chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/api/v2/oauth", self.gigachat_token)
        app.router.add_post("/api/v1/chat/completions", self.gigachat_chat)
        app.router.add_get("/api/v1/models", self.models)
        app.router.add_post("/oauth/2.0/token", self.ernie_token)
        app.router.add_post(CHAT_PREFIX + "/{endpoint}", self.ernie_chat)
        app.router.add_route("*", "/{tail:.*}", self.unknown)
        return app
