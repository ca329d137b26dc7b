"""Incremental detokenization: whole characters, the same text as one decode, stop strings."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from chatproxy.local.detok import IncrementalText


def byte_decode(ids: Sequence[int]) -> str:
    """A byte-level "tokenizer": one token per UTF-8 byte, so characters split across tokens."""
    return bytes(ids).decode("utf-8", "replace")


@given(st.text(max_size=80))
def test_pieces_add_up_to_the_text_and_never_split_a_character(text: str) -> None:
    inc = IncrementalText(byte_decode)
    pieces = [inc.push(b) for b in text.encode()]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) + inc.finish() == text


@given(st.text(max_size=40), st.text(min_size=1, max_size=5), st.text(max_size=40))
def test_text_ends_before_the_stop_string(before: str, stop: str, after: str) -> None:
    inc = IncrementalText(byte_decode, [stop])
    out = []
    for b in (before + stop + after).encode():
        out.append(inc.push(b))
        if inc.stopped:
            break
    assert inc.stopped
    text = "".join(out) + inc.finish()
    assert stop not in text
    assert (before + stop).startswith(text)


def test_quiet_use_decodes_once_at_the_end() -> None:
    inc = IncrementalText(byte_decode)
    inc.ids.extend("Привет, 世界".encode())
    assert inc.finish() == "Привет, 世界"
