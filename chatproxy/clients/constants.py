"""Retry and timeout numbers, in one place."""

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
# A Retry-After longer than this is not waited out: the 429 goes back to the client.
MAX_RETRY_AFTER = 20.0
JITTER = 0.25
# How much of an upstream error body is kept for the client's message.
MAX_UPSTREAM_MESSAGE = 500
