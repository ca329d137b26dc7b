"""Scrubs secrets out of text bound for logs and error messages."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable

from chatproxy.errors import ChatProxyError

MASK = "***"
# Credentials that travel in headers or URLs, whatever their value.
_PATTERNS = re.compile(
    r"(?i)(?P<key>\b(?:authorization|x-api-key|api[-_]?key)\b[\"']?\s*[:=]\s*[\"']?"
    r"(?:bearer\s+|basic\s+)?|\bbearer\s+|\bbasic\s+"
    r"|\b(?:access_token|refresh_token|client_secret|client_id|api_key)=)(?P<value>[^\s&\"',;]+)"
)
# Every branch of _PATTERNS contains one of these (lower-cased): a substring test per log
# line is ~50x cheaper than running the case-insensitive pattern over it.
_TRIGGERS = (
    "authorization",
    "apikey",
    "api-key",
    "api_key",
    "bearer",
    "basic",
    "_token=",
    "client_secret",
    "client_id",
)
MAX_RUNTIME_SECRETS = 64
# As Settings.secrets(): a shorter value would mask ordinary words in every line.
MIN_SECRET_LENGTH = 4


def may_hold_credentials(text: str) -> bool:
    lowered = text.lower()
    # A loop, not any(): no generator to resume nine times on every log line.
    for trigger in _TRIGGERS:  # noqa: SIM110
        if trigger in lowered:
            return True
    return False


def _longest_first(secrets: Iterable[str]) -> tuple[str, ...]:
    """Masked in this order, a secret that holds another (keys `team-a`, `team-a-admin`) is
    masked whole, before the shorter could cut it into `***-admin`."""
    return tuple(sorted(set(secrets), key=lambda secret: (-len(secret), secret)))


class Redactor:
    """Masks known secret values and anything shaped like a credential."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._static = _longest_first(s for s in secrets if s)
        # Tokens fetched at run time (OAuth access tokens); old ones expire, so keep a few.
        self._runtime: deque[str] = deque(maxlen=MAX_RUNTIME_SECRETS)

    def keep(self, secret: str) -> None:
        """A secret learnt at start-up that stays valid for the process's life."""
        if secret and secret not in self._static:
            self._static = _longest_first((*self._static, secret))

    def learn(self, secrets: Iterable[str]) -> None:
        """Secrets learnt while serving that stay secret for good: client keys a reload of
        PROXY_API_KEYS_FILE brought (a key removed from the file stays masked too). One
        tuple swapped in at once: a line formatted meanwhile sees the old set or the new."""
        new = [s for s in secrets if len(s) >= MIN_SECRET_LENGTH and s not in self._static]
        if new:
            self._static = _longest_first((*self._static, *new))

    def add(self, secret: str) -> None:
        if secret and secret not in self._runtime:
            self._runtime.append(secret)

    def __call__(self, text: str) -> str:
        for secret in (*self._static, *self._runtime):
            if secret in text:
                text = text.replace(secret, MASK)
        if not may_hold_credentials(text):
            return text
        return _PATTERNS.sub(lambda m: m.group("key") + MASK, text)


def scrubbed(exc: ChatProxyError, redact: Redactor) -> ChatProxyError:
    """`exc`, its message made fit to leave the process: an upstream's error text may echo the
    credentials it was sent, and it reaches clients in error bodies and stream events.
    In place: an error is rendered once, and redacting twice changes nothing."""
    exc.message = redact(exc.message)
    return exc
