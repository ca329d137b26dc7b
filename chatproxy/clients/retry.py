"""When to retry an upstream call and how long to wait first (pure functions)."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime
from time import time

from chatproxy.clients.constants import (
    INITIAL_RETRY_DELAY,
    JITTER,
    MAX_RETRY_DELAY,
    RETRYABLE_STATUSES,
)


def should_retry(status: int) -> bool:
    """408, 409, 429 and 5xx are worth another try; other statuses will not change."""
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        seconds = when - (time() if now is None else now)
    return max(0.0, seconds) if seconds == seconds else None  # NaN is no answer


def retry_delay(
    attempt: int, retry_after: float | None = None, rand: random.Random | None = None
) -> float:
    """Backoff with jitter before retry number `attempt` (0-based); never below Retry-After."""
    backoff = min(INITIAL_RETRY_DELAY * 2**attempt, MAX_RETRY_DELAY)
    backoff *= 1 - JITTER * (rand or random).random()
    return float(max(backoff, retry_after or 0.0))
