"""The pure retry rules."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from chatproxy.clients.constants import MAX_RETRY_DELAY
from chatproxy.clients.retry import parse_retry_after, retry_delay, should_retry


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (599, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
        (200, False),
    ],
)
def test_should_retry(status: int, expected: bool) -> None:
    assert should_retry(status) is expected


def test_retry_delay_grows_exponentially_with_jitter_and_a_cap() -> None:
    rand = random.Random(1)
    delays = [retry_delay(n, rand=rand) for n in range(8)]
    assert delays[1] > delays[0] * 1.3
    assert all(d <= MAX_RETRY_DELAY for d in delays)
    assert len({round(retry_delay(2, rand=rand), 6) for _ in range(20)}) > 1, "jitter varies"


def test_retry_after_is_a_floor() -> None:
    assert retry_delay(0, retry_after=5.0) == 5.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        (" 2.5 ", 2.5),
        ("-4", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30)
