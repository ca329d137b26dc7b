"""Which provider a `/v1` model name goes to, and OpenAI messages in chatproxy's terms."""

from __future__ import annotations

import logging
from typing import Any

import pydantic_core

from chatproxy.clients.base import Capabilities
from chatproxy.config import PROVIDER_NAMES
from chatproxy.errors import ChatProxyError, InvalidRequestError, NotFoundError
from chatproxy.openai_schemas import ContentPart, OpenAIChatRequest, OpenAIMessage
from chatproxy.providers import Providers
from chatproxy.schemas import Message

log = logging.getLogger(__name__)
ALIASES = {"openai": "chatgpt"}


class ModelNotFoundError(NotFoundError):
    """OpenAI's `model_not_found`, which its SDKs and LangChain recognise."""

    type = "model_not_found"


def model_not_found(name: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"The model '{name}' does not exist: name it as provider/model, "
        f"the provider one of {', '.join(PROVIDER_NAMES)} (or openai/...)",
        param="model",
    )


async def route_model(name: str, providers: Providers, default: str) -> tuple[str, str | None]:
    """`provider/model` by prefix; a bare name to the provider that lists it, else `default`.

    A name with a slash but no provider before it (`nope/x`) is a 404, not a call to the
    default provider, unless a provider lists it whole (`meta-llama/Llama-3-8B` on vLLM).
    """
    prefix, slash, rest = name.partition("/")
    provider = ALIASES.get(prefix, prefix)
    if slash and provider in PROVIDER_NAMES:
        return provider, rest or None
    serving = await provider_serving(name, providers)
    if serving is not None:
        return serving, name
    if slash:
        raise model_not_found(name)
    return default, name


async def provider_serving(name: str, providers: Providers) -> str | None:
    """The provider whose default model `name` is, or that lists it; None if none does."""
    for candidate, client in providers.clients.items():
        if client.default_model == name:
            return candidate
    for candidate, client in providers.clients.items():
        try:
            listed = await providers.models_cache.get(client)
        except ChatProxyError as exc:
            log.debug("cannot list %s models while routing %r: %s", candidate, name, exc.message)
            continue
        if name in listed:
            return candidate
    return None


def plain_message(message: OpenAIMessage, index: int) -> Message:
    """An OpenAI message as a plain role/content pair, or a 400 saying what cannot be."""
    where = f"messages.{index}"
    if message.role in ("tool", "function") or message.tool_calls:
        raise InvalidRequestError(
            f"{where}: tool messages need a provider with tools (chatgpt/... or gigachat/...)",
            param=f"{where}.role",
        )
    content = message.content
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"{where}.content: only text parts are supported here, not '{part.type}'",
                    param=f"{where}.content",
                )
            texts.append(part.text)
        content = "".join(texts)
    role = "system" if message.role == "developer" else message.role
    return Message(role=role, content=content or "")


def _text(content: str | list[ContentPart] | None) -> str:
    if isinstance(content, list):
        return "".join(part.text or "" for part in content if part.type == "text")
    return content or ""


def text_turns(messages: list[OpenAIMessage]) -> list[Message]:
    """What a conversation keeps of OpenAI messages: their text. Tool calls and results
    belong to one exchange, not to what the next request should be reminded of."""
    kept = []
    for message in messages:
        if message.role in ("tool", "function") or message.tool_calls:
            continue
        role = "system" if message.role == "developer" else message.role
        kept.append(Message(role=role, content=_text(message.content)))
    return kept


def raw_message(message: OpenAIMessage | Message) -> dict[str, Any]:
    """An OpenAI message for the `chatgpt` provider: everything the client sent, kept, but
    `developer` said as `system`, which every OpenAI-compatible server understands."""
    raw = message.model_dump(exclude_none=True)
    if raw.get("role") == "developer":
        raw["role"] = "system"
    return raw


def check_supported(body: OpenAIChatRequest, provider: str, capabilities: Capabilities) -> None:
    """Refuse what would change the answer if it were quietly dropped."""
    if body.n is not None and body.n > 1:
        raise InvalidRequestError("n > 1 is not supported: chatproxy returns one choice", param="n")
    if body.logprobs:
        raise InvalidRequestError("logprobs are not supported through chatproxy", param="logprobs")
    for field in ("tools", "functions"):
        if getattr(body, field) and not capabilities.tools:
            raise InvalidRequestError(
                f"provider '{provider}' does not support {field} through chatproxy; "
                "use a chatgpt/... or gigachat/... model",
                param=field,
            )
    wants_json = body.response_format and body.response_format.get("type") != "text"
    if wants_json and "response_format" not in capabilities.openai_fields:
        raise InvalidRequestError(
            f"response_format is not supported by provider '{provider}'", param="response_format"
        )


def uses_tools(body: OpenAIChatRequest) -> bool:
    """Tools offered, or tool calls and results in the conversation."""
    if body.tools or body.functions:
        return True
    return any(m.role in ("tool", "function") or m.tool_calls for m in body.messages)


def takes_openai_messages(body: OpenAIChatRequest, capabilities: Capabilities) -> bool:
    """Whether the client gets OpenAI's messages as sent rather than plain text turns."""
    return capabilities.openai_messages or (capabilities.tools and uses_tools(body))


def passthrough_fields(body: OpenAIChatRequest, capabilities: Capabilities) -> dict[str, object]:
    """The OpenAI fields this client receives as they were sent (all of them for OpenAI
    itself, the tool fields for GigaChat to translate, none for the others)."""
    fields = {
        key: value
        for key in capabilities.openai_fields
        if (value := getattr(body, key, None)) is not None
    }
    # Tool fields arrive as validated models; providers get them back as plain JSON.
    return {
        key: pydantic_core.to_jsonable_python(v, exclude_none=True) for key, v in fields.items()
    }
