"""The Qianfan ERNIE-Bot Flask server (Chinese README): `POST /chat {user_input}` answers
`{response}`, the conversation kept per `sessionid` cookie, kept as `session:<cookie>`.

Its `GET /` set the cookie; here `POST /chat` sets it when the request has none, so a
browser or a cookie-keeping client stays in its conversation."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chatproxy.compat.common import (
    answer,
    ask,
    conversation_id,
    history_layer,
    provider_for,
)
from chatproxy.handlers.common import validated
from chatproxy.keys import ROOT_PATH

OWN_PROVIDER = "ernie"
PREFIX = "session"
COOKIE = "sessionid"


class UserInputRequest(BaseModel):
    """`POST /chat` of the ERNIE-Bot server."""

    model_config = ConfigDict(extra="ignore")

    user_input: str = Field(min_length=1)


class UserInputAnswer(BaseModel):
    response: str


async def chat(request: web.Request, data: dict[str, Any]) -> web.Response:
    """`POST /chat {"user_input"}` (told apart by `routes.chat`)."""
    history_layer(request)
    body = validated(UserInputRequest, data)
    session = request.cookies.get(COOKIE) or None
    fresh = session is None
    if session is None:
        session = str(uuid.uuid4())[:16]  # the older server's own form of id
    provider = provider_for(request, OWN_PROVIDER)
    completion = await ask(request, provider, conversation_id(PREFIX, session), body.user_input)
    response = answer({"response": completion.content})
    if fresh:
        # Under ROOT_PATH, only chatproxy's paths: the gateway's host may serve others.
        path = f"{request.app[ROOT_PATH]}/"
        response.set_cookie(COOKIE, session, path=path, httponly=True, samesite="Lax")
    return response
