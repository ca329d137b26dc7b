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
    """Whether the shutdown deadline has passed, and ending the requests still in flight.

    Nothing is registered per request: at the deadline the server hands over the tasks of
    the requests its connections are handling, the drain cancels each, and the one that
    sees `expired` takes the cancellation back: a stream ends with an error event (relay),
    a request whose answer has not begun gets a 503 (the middleware).
    """

    __slots__ = ("expired",)

    def __init__(self) -> None:
        self.expired = False

    def claims(self) -> bool:
        """Whether the current task's cancellation is the deadline's; if so it is undone
        (Task.uncancel), so the request may still write its last answer."""
        if not self.expired:
            return False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True

    async def expire(self, in_flight: list[asyncio.Task[Any]]) -> None:
        """The deadline: cancel every request still in flight, let each write its answer."""
        self.expired = True
        if not in_flight:
            return
        log.warning("shutdown deadline: ending %d request(s) in flight", len(in_flight))
        for task in in_flight:
            task.cancel("chatproxy is shutting down")
        await asyncio.wait(in_flight, timeout=STREAM_END_GRACE)
