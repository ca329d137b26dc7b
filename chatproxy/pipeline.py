"""The one chat pipeline both surfaces call: client -> history -> system prompt -> call.

Handlers parse a request into a `ChatCall`, hand it to `open_turn`, and frame what the
`Turn` gives back. Everything in between — which client, the conversation's stored turns,
the operator's prompt, counting requests in flight, recording the reply — happens here,
once, for the native routes and `/v1` alike.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from chatproxy.clients.base import ChatClient, Completion, CompletionRequest, Delta
from chatproxy.errors import InvalidRequestError
from chatproxy.history.layer import Recorder
from chatproxy.keys import HISTORY, LIMITS, PROVIDERS, SETTINGS
from chatproxy.limits import Quota
from chatproxy.metrics.exchange import upstream_call
from chatproxy.openai_schemas import OpenAIMessage
from chatproxy.prompt import apply_system_prompt
from chatproxy.providers import InFlight
from chatproxy.routing import raw_message
from chatproxy.schemas import Message


@dataclass(slots=True)
class ChatCall:
    """One chat request as a surface parsed it, before history and the system prompt."""

    provider: str
    # The client's new turns as plain text: what goes upstream, and what history keeps.
    messages: list[Message]
    model: str | None = None
    # OpenAI's messages as sent (tool calls, image parts), for a client that takes them.
    openai_messages: list[OpenAIMessage] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    extra: Mapping[str, Any] | None = None
    conversation_id: str | None = None
    owner: str = ""  # whose conversation: a hash of the client's key, "" without keys
    request_id: str | None = None


class Turn:
    """A prepared call: the request that goes upstream, and its answer as it comes back."""

    __slots__ = ("client", "in_flight", "quota", "recorder", "request")

    def __init__(
        self,
        client: ChatClient,
        request: CompletionRequest,
        in_flight: InFlight,
        recorder: Recorder | None,
        quota: Quota | None = None,
    ) -> None:
        self.client = client
        self.request = request
        self.in_flight = in_flight
        self.recorder = recorder
        self.quota = quota  # the client's request and token budgets (chatproxy.limits)

    async def complete(self) -> Completion:
        with self.in_flight, upstream_call(self.client.name, self.request.model) as call:
            completion = await self.client.complete(self.request)
            call.usage = completion.usage
        if self.quota is not None:
            await self.quota.spend(completion.usage.total_tokens)
        if self.recorder is not None:
            await self.recorder.reply(
                completion.content, completion.model, clear=completion.clear_history
            )
        return completion

    def stream(self) -> AsyncGenerator[Delta, None]:
        """The reply's deltas; with history, the turn is recorded once the last one came,
        before the stream's final event, so a store that fails still ends it with an error."""
        deltas = self._counted(self.client.stream(self.request))
        if self.quota is not None and self.quota.counts_tokens:
            deltas = self.quota.metered(deltas)
        if self.recorder is None:
            return deltas
        return self._recorded(deltas, self.recorder)

    async def _counted(self, deltas: AsyncGenerator[Delta, None]) -> AsyncGenerator[Delta, None]:
        with self.in_flight, upstream_call(self.client.name, self.request.model) as call:
            try:
                async for delta in deltas:
                    call.arrived(delta)
                    yield delta
            finally:
                await deltas.aclose()

    async def _recorded(
        self, deltas: AsyncGenerator[Delta, None], recorder: Recorder
    ) -> AsyncGenerator[Delta, None]:
        parts: list[str] = []
        clear = False
        try:
            async for delta in deltas:
                parts.append(delta.content)
                clear = clear or delta.clear_history
                yield delta
        finally:
            await deltas.aclose()
        # Reached only when the upstream finished: a failed or abandoned stream stores nothing.
        await recorder.reply("".join(parts), self.request.model, clear=clear)


def _model_for(provider: str, stored: str | None) -> str | None:
    """A conversation's default `provider/model`, if it is for this provider."""
    if stored is None:
        return None
    prefix, _, model = stored.partition("/")
    return model or None if prefix == provider else None


async def open_turn(app: web.Application, call: ChatCall) -> Turn:
    """Pick the client, recall the conversation, apply the operator's prompt."""
    providers, settings = app[PROVIDERS], app[SETTINGS]
    client = providers.get(call.provider)
    limits = app.get(LIMITS)
    quota = await limits.admit() if limits is not None else None  # 429 past a budget
    past: list[Message] = []
    model = call.model
    recorder = None
    if call.conversation_id is not None:
        history = app.get(HISTORY)
        if history is None:
            raise InvalidRequestError(
                "conversation_id: this chatproxy keeps no conversations (HISTORY_STORE is "
                "not set); send the whole conversation in messages instead",
                param="conversation_id",
            )
        recalled = await history.recall(call.conversation_id, call.owner)
        past = recalled.messages
        model = model or _model_for(call.provider, recalled.model)
        recorder = history.recorder(call.conversation_id, call.owner, call.messages, call.provider)
    prompt = settings.system_prompt_for(call.provider)
    mode = settings.system_prompt_mode
    raw = None
    if call.openai_messages is not None:
        conversation: list[Message | OpenAIMessage] = [*past, *call.openai_messages]
        outgoing = apply_system_prompt(conversation, prompt, mode)
        raw = [raw_message(m) for m in outgoing]
        messages: list[Message] = []
        added = len(raw) - len(call.openai_messages)
    else:
        messages = apply_system_prompt([*past, *call.messages], prompt, mode)
        added = len(messages) - len(call.messages)
    request = CompletionRequest(
        model=model or client.default_model,
        messages=messages,
        raw_messages=raw,
        temperature=call.temperature,
        top_p=call.top_p,
        max_tokens=call.max_tokens,
        stop=call.stop,
        extra=call.extra,
        request_id=call.request_id,
        added_before=added,
    )
    if limits is None:
        return Turn(client, request, providers.track(call.provider), recorder)
    return Turn(client, request, limits.track(providers, call.provider), recorder, quota)
