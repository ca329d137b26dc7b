"""The `local` provider: the ChatClient face of the engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from chatproxy.clients.base import Capabilities, Completion, CompletionRequest, Delta
from chatproxy.errors import InvalidRequestError
from chatproxy.local.detok import IncrementalText
from chatproxy.local.engine import LocalEngine
from chatproxy.local.job import Job
from chatproxy.local.loader import LoadedModel
from chatproxy.schemas import Message, Usage

DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 512


def display_name(model: str) -> str:
    """What `/models` calls the local model: a folder's name, or the hub id."""
    path = Path(model).expanduser()
    return path.name if path.exists() else model


def chat_ids(loaded: LoadedModel, messages: Sequence[Message]) -> list[int]:
    conversation = [{"role": m.role, "content": m.content} for m in messages]
    try:
        with loaded.tokenizer_lock:
            encoded = loaded.tokenizer.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=True, return_dict=True
            )
    except TemplateError as exc:
        # Some templates insist on strict user/assistant alternation, or no system role.
        raise InvalidRequestError(
            f"the local model's chat template rejected this conversation: {exc}", param="messages"
        ) from None
    return list(encoded["input_ids"])


def fit_prompt(loaded: LoadedModel, messages: list[Message], max_new_tokens: int) -> list[int]:
    """The prompt's ids, oldest turns dropped (system kept) until it fits the context."""
    budget = loaded.context_length - max_new_tokens
    system = [m for m in messages if m.role == "system"][:1]
    turns = [m for m in messages if m not in system]
    ids = chat_ids(loaded, [*system, *turns])
    while len(ids) > budget and len(turns) > 1:
        turns = turns[2:] if len(turns) > 2 and turns[1].role == "assistant" else turns[1:]
        ids = chat_ids(loaded, [*system, *turns])
    return ids[-budget:] if len(ids) > budget else ids


class LocalClient:
    """Prepares jobs (tokenizing off the event loop) and turns job events into deltas."""

    name = "local"
    capabilities = Capabilities()

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine
        self.default_model = display_name(engine.model_name)

    async def _submit(self, request: CompletionRequest, *, streaming: bool) -> Job:
        engine = self.engine
        loaded = engine.check_ready()
        max_new = min(request.max_tokens or DEFAULT_MAX_TOKENS, loaded.context_length // 2)
        ids = await asyncio.to_thread(fit_prompt, loaded, request.messages, max_new)
        job = Job(
            prompt_ids=ids,
            max_new_tokens=max_new,
            temperature=DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            top_p=request.top_p or 1.0,
            text=IncrementalText(loaded.decode, request.stop or ()),
            loop=asyncio.get_running_loop(),
            streaming=streaming,
        )
        engine.submit(job)
        return job

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Delta, None]:
        async for delta in self._events(request, streaming=True):
            yield delta

    async def _events(
        self, request: CompletionRequest, *, streaming: bool
    ) -> AsyncGenerator[Delta, None]:
        job = await self._submit(request, streaming=streaming)
        finished = False
        try:
            while not finished:
                event = await job.events.get()
                if isinstance(event, BaseException):
                    raise event
                finished = event.finish_reason is not None
                yield event
        finally:
            if not finished:  # the client went away: free the batch slot within a step
                job.aborted = True

    async def complete(self, request: CompletionRequest) -> Completion:
        parts: list[str] = []
        finish, usage = "stop", Usage()
        # aclosing: a cancelled request must abort its job now, not when garbage is collected.
        async with contextlib.aclosing(self._events(request, streaming=False)) as deltas:
            async for delta in deltas:
                parts.append(delta.content)
                finish = delta.finish_reason or finish
                usage = delta.usage or usage
        return Completion(
            content="".join(parts), model=self.default_model, usage=usage, finish_reason=finish
        )

    async def models(self) -> list[str]:
        return [self.default_model]

    def not_ready_reason(self) -> str | None:
        return self.engine.not_ready_reason()

    def status(self) -> dict[str, Any]:
        return self.engine.status()

    async def close(self) -> None:
        await self.engine.stop()
