"""The Llama3.5 Chat API (Flask, Japanese README): `POST /chat {prompt, conversation_id}`
answers `{conversation_id, response}`; `GET /log?conversation_id=` answers the log as
"あなた: …" / "モデル: …" lines. Its ids are integers; they are kept as `log:<id>`."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chatproxy.access import client_owner
from chatproxy.compat.common import (
    answer,
    ask,
    conversation_id,
    create_conversation,
    history_layer,
    provider_for,
    stored_messages,
)
from chatproxy.errors import NotFoundError
from chatproxy.handlers.common import validated
from chatproxy.history.layer import HistoryLayer
from chatproxy.openapi import Operation, register

OWN_PROVIDER = "local"  # it ran a Llama 3 model in its own process
PREFIX = "log"
# New ids stay below 2**53, so a JavaScript client reads them back exactly.
NEW_ID_LIMIT = 2**53
# Ids fit a signed 64-bit integer, as a database column of the older clients' would.
ConversationNumber = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
# The older server's log lines: the speaker, a colon, the text.
SPEAKERS = {"user": "あなた", "assistant": "モデル", "system": "システム"}


class PromptRequest(BaseModel):
    """`POST /chat` of the Llama3.5 Chat API; a new conversation when no id is given."""

    model_config = ConfigDict(extra="ignore")

    conversation_id: ConversationNumber | None = None
    prompt: str = Field(min_length=1)


class PromptAnswer(BaseModel):
    conversation_id: int
    response: str


class LogQuery(BaseModel):
    conversation_id: ConversationNumber


class LogAnswer(BaseModel):
    conversation_id: int
    log: list[str] = Field(description='"あなた: <prompt>" and "モデル: <response>" lines')


def _conversation(number: int) -> str:
    return conversation_id(PREFIX, str(number))


async def _new_number(layer: HistoryLayer, owner: str) -> int:
    while True:
        number = secrets.randbelow(NEW_ID_LIMIT - 1) + 1
        if await create_conversation(layer, _conversation(number), owner):
            return number


async def chat(request: web.Request, data: dict[str, Any]) -> web.Response:
    """`POST /chat {"prompt", "conversation_id"?}` (told apart by `routes.chat`)."""
    layer = history_layer(request)
    body = validated(PromptRequest, data)
    number = body.conversation_id
    if number is None:
        number = await _new_number(layer, client_owner(request))
    provider = provider_for(request, OWN_PROVIDER)
    completion = await ask(request, provider, _conversation(number), body.prompt)
    return answer({"conversation_id": number, "response": completion.content})


async def get_log(request: web.Request) -> web.Response:
    """`GET /log?conversation_id=`: the conversation as the older server's log lines."""
    layer = history_layer(request)
    number = validated(LogQuery, dict(request.query)).conversation_id
    messages = await stored_messages(layer, _conversation(number), client_owner(request))
    if messages is None:
        raise NotFoundError(f"no conversation {number}", param="conversation_id")
    log = [f"{SPEAKERS.get(m.role, m.role)}: {m.content}" for m in messages]
    return answer({"conversation_id": number, "log": log})


register(
    Operation(
        "GET",
        "/log",
        "A conversation's log (the Llama3.5 Chat API's shape)",
        "compat",
        description="Needs HISTORY_STORE. The conversation started by `POST /chat {prompt}`, "
        'as "あなた: …" and "モデル: …" lines; 404 for an unknown id.',
        query={"conversation_id": "the integer id `POST /chat` answered (required)"},
        responses={200: LogAnswer},
        errors=(400, 404, 503),
    )
)
