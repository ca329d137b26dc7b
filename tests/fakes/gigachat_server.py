"""A fake GigaChat: OAuth with Basic credentials, RqUID and scope; expiring tokens; its rules."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CREDENTIALS = "Z2lnYS1jbGllbnQ6Z2lnYS1zZWNyZXQtdmFsdWU="  # base64("giga-client:giga-secret-value")
SCOPE = "GIGACHAT_API_PERS"


def answer(message: dict[str, Any], finish_reason: str, usage: dict[str, int]) -> web.Response:
    """A non-streamed GigaChat completion."""
    return web.json_response(
        {
            "choices": [{"message": message, "index": 0, "finish_reason": finish_reason}],
            "created": int(time.time()),
            "model": "GigaChat:1.0.26.20",
            "object": "chat.completion",
            "usage": {**usage, "total_tokens": sum(usage.values())},
        }
    )


def function_rules(body: dict[str, Any]) -> str | None:
    """GigaChat's function-calling rules, as its API enforces them (422 otherwise)."""
    for function in body.get("functions") or []:
        if not function.get("name") or not isinstance(function.get("parameters"), dict):
            return "function must have name and parameters"
    for message in body["messages"]:
        role = message["role"]
        if role not in ("system", "user", "assistant", "function"):
            return f"unknown role: {role}"
        if role == "function":
            try:
                ok = isinstance(json.loads(message["content"]), dict) and message.get("name")
            except (ValueError, KeyError):
                ok = False
            if not ok:
                return "function result must be a JSON object with the function's name"
        call = message.get("function_call")
        if call is not None and not isinstance(call.get("arguments"), dict):
            return "function_call.arguments must be an object"
    return None


def function_to_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """Calls the first offered function (or the one forced) when the user spoke last."""
    functions = body.get("functions") or []
    choice = body.get("function_call", "auto")
    if not functions or choice == "none" or body["messages"][-1]["role"] != "user":
        return None
    name = choice["name"] if isinstance(choice, dict) else functions[0]["name"]
    return {"name": name, "arguments": {"city": "Москва", "days": 2}}


@dataclass
class FakeGigaChat:
    base: str = ""
    token_ttl: float = 1800.0
    token_delay: float = 0.0
    token_status: int | None = None  # force the token endpoint to answer this
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (epoch s)
    token_requests: int = 0
    issued: list[str] = field(default_factory=list)
    rquids: list[str] = field(default_factory=list)
    chats: list[dict[str, Any]] = field(default_factory=list)
    rejected_tokens: int = 0
    reply_text: str = "Привет от GigaChat"
    answer: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def revoke_all(self) -> None:
        self.tokens.clear()

    async def oauth(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        if self.token_status is not None:
            return web.json_response(
                {"code": 0, "message": "unavailable"}, status=self.token_status
            )
        rquid = request.headers.get("RqUID", "")
        try:
            uuid.UUID(rquid, version=4)
        except ValueError:
            return web.json_response({"code": 5, "message": "RqUID is not a uuid4"}, status=400)
        self.rquids.append(rquid)
        if request.headers.get("Authorization") != f"Basic {CREDENTIALS}":
            return web.json_response(
                {"code": 6, "message": "credentials doesn't match db data"}, status=401
            )
        form = await request.post()
        if form.get("scope") != SCOPE:
            return web.json_response(
                {"code": 7, "message": "scope from db not fully includes consumed scope"},
                status=400,
            )
        token = f"giga-token-{next(self._counter)}-{uuid.uuid4().hex}"
        expires = time.time() + self.token_ttl
        self.tokens[token] = expires
        self.issued.append(token)
        return web.json_response({"access_token": token, "expires_at": int(expires * 1000)})

    def _authorized(self, request: web.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        expiry = self.tokens.get(token)
        if expiry is None or expiry < time.time():
            self.rejected_tokens += 1
            return False
        return True

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"status": 401, "message": "Token has expired"}, status=401)
        if self.answer is not None:  # a test's own answer, given an authorized request
            return await self.answer(request)
        body = await request.json()
        self.chats.append(body)
        if not body.get("messages"):
            return web.json_response({"status": 422, "message": "messages is empty"}, status=422)
        roles = [m["role"] for m in body["messages"]]
        if "system" in roles[1:]:
            return web.json_response(
                {"status": 422, "message": "system message must be the first message"}, status=422
            )
        problem = function_rules(body)
        if problem:
            return web.json_response({"status": 422, "message": problem}, status=422)
        call = function_to_call(body)
        if call is not None:
            return await self._function_call(request, body, call)
        if roles[-1] == "function":
            self.reply_text = f"Итог: {body['messages'][-1]['content']}"
        if body.get("temperature") == 0:
            return web.json_response(
                {"status": 422, "message": "temperature must be > 0"}, status=422
            )
        if body.get("stream"):
            return await self._stream(request)
        message = {"role": "assistant", "content": self.reply_text}
        return answer(message, "stop", {"prompt_tokens": 18, "completion_tokens": 4})

    async def _function_call(
        self, request: web.Request, body: dict[str, Any], call: dict[str, Any]
    ) -> web.StreamResponse:
        """GigaChat's answer when it decides to call: arguments as an object, one call."""
        message = {"role": "assistant", "content": "", "function_call": call}
        state = {"functions_state_id": str(uuid.uuid4())}
        if not body.get("stream"):
            usage = {"prompt_tokens": 40, "completion_tokens": 9}
            return answer({**message, **state}, "function_call", usage)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {
            "choices": [
                {"delta": {**message, **state}, "index": 0, "finish_reason": "function_call"}
            ],
            "created": 1,
            "model": "GigaChat",
            "object": "chat.completion",
        }
        await resp.write(
            f"data: {json.dumps(chunk, ensure_ascii=False)}\n\ndata: [DONE]\n\n".encode()
        )
        return resp

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in ("При", "вет"):
            chunk = {
                "choices": [{"delta": {"content": piece, "role": "assistant"}, "index": 0}],
                "created": 1,
                "model": "GigaChat",
                "object": "chat.completion",
            }
            await resp.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
        last = {
            "choices": [{"delta": {"content": ""}, "index": 0, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        }
        await resp.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        return resp

    async def models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"status": 401, "message": "Unauthorized"}, status=401)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "owned_by": "salutedevices"}
                    for name in ("GigaChat", "GigaChat-Max", "GigaChat-Pro")
                ],
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v2/oauth", self.oauth)
        app.router.add_post("/api/v1/chat/completions", self.chat)
        app.router.add_get("/api/v1/models", self.models)
        return app
