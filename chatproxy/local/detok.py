"""Token ids to text, incrementally: whole characters only, stop strings honoured."""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class IncrementalText:
    """Hands out only the text not yet handed out, decoding a short window per token.

    Re-decoding everything each step would cost O(n) per token; like vLLM and transformers'
    streamer, decode from a prefix offset and compare with what that prefix alone gave
    (tokens merge at their boundaries, so single tokens cannot be decoded alone).
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""
        self.stopped = False
        self._prefix = 0  # where the window starts
        self._read = 0  # tokens already turned into text

    @property
    def watches_stops(self) -> bool:
        return bool(self._stop)

    def finish(self) -> str:
        """The text not handed out yet: all of it for ids appended without `push`, or the
        end of an incomplete character that `push` held back; nothing after a stop."""
        if self.stopped:
            return ""
        full = self._decode(self.ids)
        rest = full[len(self.text) :] if full.startswith(self.text) else ""
        self.text += rest
        return rest

    def push(self, token_id: int) -> str:
        """Add one token; return the new text (empty while a character is incomplete)."""
        self.ids.append(token_id)
        seen = self._decode(self.ids[self._prefix : self._read])
        window = self._decode(self.ids[self._prefix :])
        if len(window) <= len(seen) or window.endswith(REPLACEMENT):
            return ""  # the rest of a multi-byte character is still to come
        new = window[len(seen) :]
        self._prefix, self._read = self._read, len(self.ids)
        if self._stop:
            new = self._cut_at_stop(new)
        self.text += new
        return new

    def _cut_at_stop(self, new: str) -> str:
        tail = self.text[-max(len(s) for s in self._stop) :] + new
        for stop in self._stop:
            at = tail.find(stop)
            if at != -1:
                self.stopped = True
                keep = at - (len(tail) - len(new))
                return new[: max(keep, 0)]
        return new
