"""Token ids to text, incrementally: whole characters only, stop strings honoured."""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class IncrementalText:
    """Decodes a growing list of ids and hands out only the text not yet handed out."""

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; return the new text (empty while a character is incomplete)."""
        self.ids.append(token_id)
        decoded = self._decode(self.ids)
        if decoded.endswith(REPLACEMENT):
            return ""  # the rest of a multi-byte character is still to come
        for stop in self._stop:
            at = decoded.find(stop, max(0, len(self.text) - len(stop)))
            if at != -1:
                decoded = decoded[:at]
                self.stopped = True
                break
        new = decoded[len(self.text) :]
        self.text = decoded
        return new
