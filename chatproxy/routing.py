"""Which provider a `/v1` model name goes to, and OpenAI messages in chatproxy's terms."""

from __future__ import annotations

import logging

from chatproxy.config import PROVIDERS
from chatproxy.errors import ChatProxyError, InvalidRequestError
from chatproxy.openai_schemas import OpenAIChatRequest, OpenAIMessage
from chatproxy.providers import Providers
from chatproxy.schemas import Message

log = logging.getLogger(__name__)
ALIASES = {"openai": "chatgpt"}
# Fields that cannot be ignored without changing the answer, on every provider.
UNSUPPORTED = {
    "tools": "tool calling is not supported through chatproxy yet",
    "functions": "function calling is not supported through chatproxy yet",
    "logprobs": "logprobs are not supported through chatproxy",
}
# OpenAI sampling fields the `chatgpt` provider receives as they are; others ignore them.
OPENAI_PASSTHROUGH = (
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "logit_bias",
    "user",
    "response_format",
)


async def route_model(name: str, providers: Providers, default: str) -> tuple[str, str | None]:
    """`provider/model` by prefix; a bare name to the provider that lists it, else `default`."""
    prefix, slash, rest = name.partition("/")
    provider = ALIASES.get(prefix, prefix)
    if slash and provider in PROVIDERS:
        return provider, rest or None
    for candidate, client in providers.clients.items():
        if client.default_model == name:
            return candidate, name
    for candidate, client in providers.clients.items():
        try:
            listed = await providers.models_cache.get(client)
        except ChatProxyError as exc:
            log.debug("cannot list %s models while routing %r: %s", candidate, name, exc.message)
            continue
        if name in listed:
            return candidate, name
    return default, name


def plain_message(message: OpenAIMessage, index: int) -> Message:
    """An OpenAI message as a plain role/content pair, or a 400 saying what cannot be."""
    where = f"messages.{index}"
    if message.role in ("tool", "function") or message.tool_calls:
        raise InvalidRequestError(
            f"{where}: tool messages are not supported through chatproxy", param=f"{where}.role"
        )
    content = message.content
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"{where}.content: only text parts are supported, not '{part.type}'",
                    param=f"{where}.content",
                )
            texts.append(part.text)
        content = "".join(texts)
    role = "system" if message.role == "developer" else message.role
    return Message(role=role, content=content or "")


def check_supported(body: OpenAIChatRequest, provider: str) -> None:
    if body.n is not None and body.n > 1:
        raise InvalidRequestError("n > 1 is not supported: chatproxy returns one choice", param="n")
    for field, reason in UNSUPPORTED.items():
        if getattr(body, field):
            raise InvalidRequestError(reason, param=field)
    wants_json = body.response_format and body.response_format.get("type") != "text"
    if wants_json and provider != "chatgpt":
        raise InvalidRequestError(
            f"response_format is not supported by provider '{provider}'", param="response_format"
        )


def passthrough_fields(body: OpenAIChatRequest, provider: str) -> dict[str, object]:
    if provider != "chatgpt":
        return {}
    return {key: getattr(body, key) for key in OPENAI_PASSTHROUGH if getattr(body, key) is not None}
