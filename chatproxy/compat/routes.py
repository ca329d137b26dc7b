"""The older servers' routes on the router, and `POST /chat`, which three of them shared."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from chatproxy.compat import client_query, ernie_session, llama_log, pure_model_api
from chatproxy.compat.common import json_object
from chatproxy.errors import InvalidRequestError
from chatproxy.openapi import Body, Operation, register

ChatShape = Callable[[web.Request, dict[str, Any]], Awaitable[web.Response]]
# The field that carries the text tells the older servers' `POST /chat` bodies apart.
CHAT_SHAPES: dict[str, ChatShape] = {
    "prompt": llama_log.chat,
    "message": pure_model_api.chat,
    "user_input": ernie_session.chat,
}


async def chat(request: web.Request) -> web.Response:
    """`POST /chat` in whichever older server's shape the body has."""
    data = await json_object(request)
    present = [field for field in CHAT_SHAPES if field in data]
    if len(present) != 1:
        fields = ", ".join(CHAT_SHAPES)
        found = f"got {', '.join(present)}" if present else "got none"
        hint = "; a whole conversation goes to POST /{provider}/" if "messages" in data else ""
        raise InvalidRequestError(
            f"POST /chat takes exactly one of {fields} (the older servers' shapes), {found}{hint}"
        )
    return await CHAT_SHAPES[present[0]](request, data)


def setup_compat_routes(app: web.Application) -> None:
    """Fixed routes, so they go before the `/{provider}` catch-alls."""
    app.router.add_post("/chat", chat)
    app.router.add_get("/log", llama_log.get_log)
    app.router.add_post("/reset", pure_model_api.reset)
    app.router.add_post("/query", client_query.query)
    app.router.add_get("/model", client_query.get_model)
    app.router.add_post("/model", client_query.set_model)
    # Beside chatproxy's POST /history: only ?client_name= requests are the older server's.
    app.router.add_get("/history", client_query.get_history)
    app.router.add_delete("/history", client_query.delete_history)


def _one_of(*models: Any) -> dict[str, Any]:
    return {"oneOf": [model.model_json_schema() for model in models]}


register(
    Operation(
        "POST",
        "/chat",
        "Chat in an older server's shape (three of them had POST /chat)",
        "compat",
        description="Needs HISTORY_STORE. The body's field picks the shape: `prompt` (and "
        "an integer `conversation_id`) answers `{conversation_id, response}`; `message` "
        "(with `max_tokens`, `temperature`) answers `{message, response, status}`, in one "
        "conversation per key that `POST /reset` clears; `user_input` answers `{response}`, "
        "in the conversation of the `sessionid` cookie (set when absent).",
        request=Body(
            schema=_one_of(
                llama_log.PromptRequest,
                pure_model_api.MessageRequest,
                ernie_session.UserInputRequest,
            )
        ),
        responses={
            200: Body(
                schema=_one_of(
                    llama_log.PromptAnswer,
                    pure_model_api.MessageAnswer,
                    ernie_session.UserInputAnswer,
                )
            )
        },
        errors=(503,),
    )
)
