"""The client keys chatproxy accepts: PROXY_API_KEYS and PROXY_API_KEYS_FILE, reloadable."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

# A key file bigger than this is not a key file (a wrong path, a mounted directory's blob).
MAX_KEY_FILE_BYTES = 1024 * 1024


class KeyFileError(ValueError):
    """PROXY_API_KEYS_FILE cannot be read or holds something that is not a key."""


def key_id(key: str) -> str:
    """How logs and metrics name a key: the first 12 hex digits of its SHA-256, never
    the key itself (48 bits: enough to tell an operator's keys apart, useless to guess)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def read_key_file(path: Path) -> frozenset[str]:
    """One key per line; blank lines and `#` comments are skipped."""
    try:
        if path.stat().st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{path} is larger than {MAX_KEY_FILE_BYTES} bytes")
        # utf-8-sig: an editor's byte order mark is not part of the first key.
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read {path}: {exc.__class__.__name__}") from None
    keys = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        # A key travels in a header: whitespace inside one is a broken line, not a key.
        if any(ch.isspace() for ch in line) or not line.isprintable():
            raise KeyFileError(
                f"{path} line {number} is not a key (it holds whitespace or a control character)"
            )
        keys.add(line)
    return frozenset(keys)


class KeyRing:
    """The keys accepted now. A reload swaps the whole set in one assignment, so a request
    checked during a reload sees either the old keys or the new ones, never a mixture.

    `required`: a key file is configured, so auth stays on even when it holds no key (then
    none is accepted): emptying the file revokes every key, it never opens the API."""

    __slots__ = ("keys", "required")

    def __init__(self, keys: frozenset[str] = frozenset(), *, required: bool = False) -> None:
        self.keys = keys
        self.required = required

    def __bool__(self) -> bool:
        """Whether auth is on."""
        return self.required or bool(self.keys)

    def accepts(self, presented: str) -> bool:
        # Header bytes that are not UTF-8 arrive as surrogates: compared as the bytes sent.
        encoded = presented.encode("utf-8", "surrogateescape")
        # compare_digest for every key, without stopping at a match: no timing hint either.
        found = False
        for key in self.keys:
            found |= hmac.compare_digest(encoded, key.encode())
        return found
