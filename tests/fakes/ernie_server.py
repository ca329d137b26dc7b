"""A fake ERNIE (wenxinworkshop): query-string tokens, errors inside HTTP 200, strict rules."""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_KEY = "ernie-api-key-0123456789"
SECRET_KEY = "ernie-secret-key-abcdefghij"


def error(code: int, message: str) -> web.Response:
    return web.json_response({"error_code": code, "error_msg": message})


# The 128k models allow longer inputs and answers (qianfan SDK's table).
LONG_ENDPOINTS = {"ernie-speed-128k": 4096, "ernie-3.5-128k": 8192, "ernie-4.0-turbo-128k": 4096}


def rule_violation(body: dict[str, Any], endpoint: str = "completions_pro") -> str | None:
    """The checks ERNIE makes before it answers (336003 and kin)."""
    messages = body.get("messages") or []
    if not messages or len(messages) % 2 == 0:
        return "the length of messages must be an odd number"
    for index, message in enumerate(messages):
        expected = "user" if index % 2 == 0 else "assistant"
        if message.get("role") != expected:
            return (
                f"the role of message with {'even' if index % 2 == 0 else 'odd'} index in "
                f"the messages must be {expected}"
            )
    if len(messages[-1]["content"]) > 4800:
        return "the last message content is too long"
    if endpoint not in LONG_ENDPOINTS and sum(len(m["content"]) for m in messages) > 20000:
        return "the total length of messages is too long"
    temperature = body.get("temperature")
    if temperature is not None and not 0 < temperature <= 1:
        return "temperature range is (0, 1.0]"
    tokens = body.get("max_output_tokens")
    most = LONG_ENDPOINTS.get(endpoint, 2048)
    if tokens is not None and not 2 <= tokens <= most:
        return f"max_output_tokens range is [2, {most}]"
    return None


@dataclass
class FakeErnie:
    base: str = ""
    token_ttl: float = 2_592_000.0
    tokens: dict[str, float] = field(default_factory=dict)
    token_requests: int = 0
    issued: list[str] = field(default_factory=list)
    token_urls: list[str] = field(default_factory=list)
    chats: list[dict[str, Any]] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    script: deque[web.Response] = field(default_factory=deque)
    extra: dict[str, Any] = field(default_factory=dict)  # merged into every answer
    stream_events: list[dict[str, Any]] | None = None

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        self.token_urls.append(str(request.url))
        query = request.query
        if query.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if query.get("client_id") != API_KEY or query.get("client_secret") != SECRET_KEY:
            return web.json_response(
                {"error": "invalid_client", "error_description": "unknown client id"}, status=401
            )
        token = f"24.{uuid.uuid4().hex}"
        self.tokens[token] = time.time() + self.token_ttl
        self.issued.append(token)
        return web.json_response(
            {
                "access_token": token,
                "expires_in": int(self.token_ttl),
                "refresh_token": "25.x",
                "scope": "public",
            }
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("access_token", "")
        if token not in self.tokens:
            return error(110, "Access token invalid or no longer valid")
        if self.tokens[token] < time.time():
            return error(111, "Access token expired")
        body = await request.json()
        self.chats.append(body)
        self.endpoints.append(request.match_info["endpoint"])
        if self.script:
            return self.script.popleft()
        problem = rule_violation(body, request.match_info["endpoint"])
        if problem:
            return error(336003, problem)
        if body.get("stream"):
            return await self._stream(request)
        return web.json_response(
            {
                "id": "as-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "result": "你好！",
                "is_truncated": False,
                "need_clear_history": False,
                "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
                **self.extra,
            }
        )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        events = self.stream_events or [
            {"id": "as-1", "sentence_id": 0, "result": "你", "is_end": False},
            {"id": "as-1", "sentence_id": 1, "result": "好", "is_end": False},
            {
                "id": "as-1",
                "sentence_id": 2,
                "result": "！",
                "is_end": True,
                "is_truncated": False,
                "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
            },
        ]
        for event in events:
            await resp.write(f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())
        return resp

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/oauth/2.0/token", self.token)
        app.router.add_post("/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{endpoint}", self.chat)
        return app
