"""The shutdown drain's state: chat requests in flight, and whether the deadline passed.

chatproxy.server runs the drain; the pipeline, relay and the middleware only consult it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from chatproxy.errors import ServiceUnavailableError

log = logging.getLogger(__name__)
# After the deadline: how long cancelled requests get to write their last answer.
STREAM_END_GRACE = 0.3


def shutting_down() -> ServiceUnavailableError:
    return ServiceUnavailableError("chatproxy is shutting down", retry_after=1)


class Drain:
    """The chat requests in flight, and whether the shutdown deadline has passed.

    The pipeline registers each chat request's task here (a set add and a done callback per
    request, nothing per chunk); at the deadline the drain cancels each, and the one that
    sees `expired` takes the cancellation back: a stream ends with an error event (relay),
    a request whose answer has not begun gets a 503 (the middleware).
    """

    __slots__ = ("expired", "streams")

    def __init__(self) -> None:
        self.streams: set[asyncio.Task[Any]] = set()
        self.expired = False

    def track(self, task: asyncio.Task[Any] | None) -> None:
        """Know `task`, a stream's, until it is done."""
        if task is not None:
            self.streams.add(task)
            task.add_done_callback(self.streams.discard)

    def claims(self) -> bool:
        """Whether the current task's cancellation is the deadline's; if so it is undone
        (Task.uncancel), so the stream may still write its last event."""
        if not self.expired:
            return False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True

    async def expire(self) -> None:
        """The deadline: cancel every stream still open, and let each write its error."""
        self.expired = True
        streams = list(self.streams)
        if not streams:
            return
        log.warning("shutdown deadline: ending %d request(s) in flight", len(streams))
        for task in streams:
            task.cancel("chatproxy is shutting down")
        await asyncio.wait(streams, timeout=STREAM_END_GRACE)
