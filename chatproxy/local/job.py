"""One request's life on the worker thread, and how its results reach the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from chatproxy.clients.base import Delta
from chatproxy.local.detok import IncrementalText
from chatproxy.schemas import Usage

JobEvent = Delta | BaseException


def deliver(batch: list[tuple[asyncio.Queue[JobEvent], JobEvent]]) -> None:
    """Runs on the event loop: a whole step's events, in order."""
    for queue, event in batch:
        queue.put_nowait(event)


def emit_step(jobs: list[Job], step: Callable[[], None]) -> None:
    """Run `step` (worker thread) with the jobs' events held, then send them in one wake-up."""
    for job in jobs:
        job.outbox = []
    try:
        step()
    finally:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[JobEvent], JobEvent]]]
        by_loop = {}
        for job in jobs:
            if job.outbox:
                by_loop.setdefault(job.loop, []).extend((job.events, e) for e in job.outbox)
            job.outbox = None
        for loop, events in by_loop.items():
            loop.call_soon_threadsafe(deliver, events)


@dataclass(eq=False)
class Job:
    """Created on the event loop, generated on the worker; only `aborted` crosses back."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float  # 0 means greedy
    top_p: float
    text: IncrementalText
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[JobEvent] = field(default_factory=asyncio.Queue)
    aborted: bool = False  # set by the event loop when the client goes away
    generated: int = 0
    done: bool = False
    finish_reason: str = "stop"
    on_finish: Callable[[Job], None] | None = None
    outbox: list[JobEvent] | None = None
    streaming: bool = True

    @property
    def quiet(self) -> bool:
        """Nobody reads this job's text before it ends and no stop string needs watching:
        skip per-token decoding and events, and send the whole text with the final event."""
        return not self.streaming and not self.text.watches_stops

    def input_ids(self) -> list[int]:
        """What the model must read to go on: the prompt and everything generated so far."""
        return self.prompt_ids + self.text.ids

    def remaining(self) -> int:
        return self.max_new_tokens - self.generated

    def sampling_key(self) -> tuple[bool, float, float]:
        """Jobs with equal keys can share one `generate` call."""
        if self.temperature <= 0:
            return (False, 0.0, 1.0)
        return (True, round(self.temperature, 4), round(self.top_p, 4))

    def emit(self, event: JobEvent) -> None:
        """Hand an event to the event loop; the only way results leave the worker thread.
        Inside a generation step events wait in the outbox, so a step wakes the loop once."""
        if self.outbox is not None:
            self.outbox.append(event)
        else:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def take(self, token: int, eos_ids: frozenset[int]) -> None:
        """Account for one generated token (worker thread)."""
        if self.done:
            return
        if self.aborted:
            self.finish("cancelled")
            return
        if token in eos_ids:
            self.finish("stop")
            return
        self.generated += 1
        if self.quiet:
            self.text.ids.append(token)  # decoded once, at the end
        else:
            piece = self.text.push(token)
            if piece:
                self.emit(Delta(content=piece))
        if self.text.stopped:
            self.finish("stop")
        elif self.generated >= self.max_new_tokens:
            self.finish("length")

    def finish(self, reason: str) -> None:
        """Done: send the final event (finish reason and usage) now, not when the batch ends,
        so a short request never waits for the long ones it shares a batch with."""
        if self.done:
            return
        self.done = True
        self.finish_reason = reason
        if self.on_finish is not None:
            self.on_finish(self)  # before the event: a client may read /status right after
        usage = Usage(
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=self.generated,
            total_tokens=len(self.prompt_ids) + self.generated,
        )
        text = self.text.finish()
        self.emit(Delta(content=text, finish_reason=self.finish_reason, usage=usage))
