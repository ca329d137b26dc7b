"""Request ids on every line, and secrets on none."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatproxy.keys import SETTINGS
from chatproxy.logs import (
    AccessLog,
    JsonFormatter,
    LineHandler,
    RedactingFormatter,
    request_id_var,
    setup_logging,
    sole_line_handler,
)
from chatproxy.redact import _PATTERNS, Redactor, may_hold_credentials
from tests.conftest import OPENAI_KEY, Proxy
from tests.fakes.openai_server import FakeOpenAI, hang, reply, status

USER = {"role": "user", "content": "hi"}


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = setup_logging("DEBUG", "text", Redactor([OPENAI_KEY]), stream)
    yield stream
    logging.getLogger().removeHandler(handler)


async def test_request_id_is_echoed_or_generated(proxy: Proxy, log_stream: io.StringIO) -> None:
    client = await proxy()
    resp = await client.post(
        "/chatgpt/", json={"messages": [USER]}, headers={"X-Request-ID": "abc-123"}
    )
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = await client.get("/health")
    generated = resp.headers["X-Request-ID"]
    assert len(generated) == 32
    resp = await client.get("/health", headers={"X-Request-ID": "bad id\twith junk"})
    assert resp.headers["X-Request-ID"] != "bad id\twith junk"
    resp = await client.get("/health", headers={"X-Request-ID": f"req-{OPENAI_KEY}"})
    assert OPENAI_KEY not in resp.headers["X-Request-ID"], "an id holding a secret is replaced"
    lines = log_stream.getvalue().splitlines()
    assert any("[abc-123]" in line and "POST /chatgpt/ 200" in line for line in lines)
    assert any(f"[{generated}]" in line for line in lines)
    assert OPENAI_KEY not in log_stream.getvalue()


async def test_a_client_that_leaves_is_logged_as_499(
    proxy: Proxy, fake_openai: FakeOpenAI, log_stream: io.StringIO
) -> None:
    fake_openai.default = hang(5.0)
    client = await proxy()
    with pytest.raises(TimeoutError):
        await client.post(
            "/chatgpt/",
            json={"messages": [USER]},
            headers={"X-Request-ID": "gone-1"},
            timeout=aiohttp.ClientTimeout(total=0.3),
        )
    for _ in range(100):
        if "[gone-1]" in log_stream.getvalue():
            break
        await asyncio.sleep(0.02)
    assert "[gone-1] POST /chatgpt/ 499 " in log_stream.getvalue()


async def test_request_id_reaches_the_upstream_and_error_bodies(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    await client.post("/chatgpt/", json={"messages": [USER]}, headers={"X-Request-ID": "r-1"})
    assert fake_openai.headers[0]["X-Request-ID"] == "r-1"
    resp = await client.post("/chatgpt/", data=b"{", headers={"X-Request-ID": "r-2"})
    assert (await resp.json())["request_id"] == "r-2"
    assert resp.headers["X-Request-ID"] == "r-2"


async def test_key_never_reaches_logs_errors_or_reprs(
    proxy: Proxy, fake_openai: FakeOpenAI, log_stream: io.StringIO
) -> None:
    # An upstream that echoes the key back in its error, as some do.
    echo = {"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}"}}
    fake_openai.queue(status(500, echo), status(500, echo), status(400, echo), reply())
    client = await proxy(upstream_retries=2)
    first = await client.post("/chatgpt/", json={"messages": [USER]})
    second = await client.post("/chatgpt/", json={"messages": [USER]})
    third = await client.post("/chatgpt/", json={"messages": [USER]})
    assert [first.status, second.status, third.status] == [400, 200, 200]
    assert OPENAI_KEY not in await first.text()
    assert "***" in (await first.json())["error"]
    status_body = await (await client.get("/status")).text()
    assert OPENAI_KEY not in status_body
    logged = log_stream.getvalue()
    assert "retry 1 of 2" in logged, "the log capture saw the upstream failures"
    assert OPENAI_KEY not in logged
    assert OPENAI_KEY not in repr(client.app[SETTINGS])


def test_redactor_masks_credential_shapes() -> None:
    redact = Redactor(["topsecret"])
    text = redact(
        "Authorization: Bearer abc.def GET /x?access_token=tok123&x=1 basic Zm9v "
        "topsecret client_secret=s3cr3t"
    )
    for leaked in ("abc.def", "tok123", "Zm9v", "topsecret", "s3cr3t"):
        assert leaked not in text
    assert "x=1" in text
    redact.add("runtime-token-value")
    assert "runtime-token-value" not in redact("token runtime-token-value here")


def test_json_log_format(log_stream: io.StringIO) -> None:
    stream = io.StringIO()
    handler = setup_logging("INFO", "json", Redactor(["hunter22"]), stream)
    try:
        logging.getLogger("chatproxy.test").info("password is %s", "hunter22")
    finally:
        logging.getLogger().removeHandler(handler)
    entry = json.loads(stream.getvalue().strip())
    assert entry["message"] == "password is ***"
    assert entry["level"] == "INFO" and entry["request_id"] == "-"


fragments = st.sampled_from(
    [
        "Authorization",
        "authorization",
        ": ",
        "=",
        "Bearer ",
        "BASIC ",
        "api_key",
        "API-KEY",
        "x-api-key",
        "apikey",
        "client_id",
        "client_secret",
        "access_token",
        "refresh_token",
        "?",
        "&",
        " ",
        "tok3n",
        '"',
        "'",
        "x",
    ]
)


@given(st.lists(fragments, max_size=12).map("".join))
def test_the_quick_filter_never_skips_a_credential(text: str) -> None:
    if _PATTERNS.search(text):
        assert may_hold_credentials(text)


def test_cached_timestamps_match_the_standard_format() -> None:
    ours, standard = RedactingFormatter(Redactor()), logging.Formatter()
    for created in (1_700_000_000.25, 1_700_000_000.999, 1_700_000_001.0):
        record = logging.LogRecord("x", logging.INFO, "f", 1, "m", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.formatTime(record) == standard.formatTime(record)


@pytest.fixture
def own_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger tree whose only handler is ours, as in the real process."""
    parent = logging.getLogger("acctest")
    parent.propagate = False
    stream = io.StringIO()
    handler = LineHandler(stream)
    handler.setFormatter(RedactingFormatter(Redactor(["sk-static-secret"])))
    parent.setLevel(logging.INFO)
    saved = parent.handlers
    # pytest hangs its capture handlers on every logger that does not propagate, and does so
    # after fixtures run: a fresh list, read at each call, keeps them out of this tree.
    parent.handlers = _OnlyOurs([handler])
    yield logging.getLogger("acctest.access"), stream
    parent.handlers = saved
    parent.filters.clear()
    parent.propagate = True


class _OnlyOurs(list[logging.Handler]):
    """A handler list that ignores additions from outside the test (pytest's capture)."""

    def append(self, handler: logging.Handler) -> None:
        if isinstance(handler, LineHandler):
            super().append(handler)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _without_time(line: str) -> str:
    return line.split(" ", 2)[2]


@pytest.mark.parametrize("fmt", [RedactingFormatter, JsonFormatter])
def test_access_line_direct_path_writes_what_logging_writes(
    own_logger: tuple[logging.Logger, io.StringIO], fmt: type[RedactingFormatter]
) -> None:
    logger, stream = own_logger
    handler = logger.parent.handlers[0]  # type: ignore[union-attr]
    handler.setFormatter(fmt(Redactor(["sk-static-secret"])))
    assert sole_line_handler(logger) is handler
    token = request_id_var.set("rid-1")
    try:
        AccessLog(logger)("POST", "/chatgpt/", 200, 1.25)
        logger.info("%s %s %d %.1fms", "POST", "/chatgpt/", 200, 1.25)  # through a LogRecord
    finally:
        request_id_var.reset(token)
    direct, through_logging = stream.getvalue().splitlines()
    if fmt is JsonFormatter:
        first, second = json.loads(direct), json.loads(through_logging)
        assert first.pop("ts")[:16] == second.pop("ts")[:16]
        assert first == second
        assert first["message"] == "POST /chatgpt/ 200 1.2ms"
    else:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ", direct)
        assert _without_time(direct) == _without_time(through_logging)
        assert _without_time(direct) == "INFO acctest.access [rid-1] POST /chatgpt/ 200 1.2ms"


def test_access_line_scrubs_secrets_in_the_path(
    own_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = own_logger
    AccessLog(logger)("GET", "/sk-static-secret/x", 404, 0.1)
    AccessLog(logger)("GET", "/x/api_key=abcdef", 404, 0.1)
    text = stream.getvalue()
    assert "sk-static-secret" not in text and "abcdef" not in text
    assert text.count("***") == 2


def test_access_line_defers_to_logging_when_anything_else_listens(
    own_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = own_logger
    extra = Collect()
    logger.addHandler(extra)
    try:
        assert sole_line_handler(logger) is None
        AccessLog(logger)("POST", "/ernie/", 502, 3.0)
    finally:
        logger.removeHandler(extra)
    assert [r.getMessage() for r in extra.records] == ["POST /ernie/ 502 3.0ms"]
    assert "POST /ernie/ 502 3.0ms" in stream.getvalue()


def test_access_line_honours_levels_and_filters(
    own_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = own_logger
    parent = logger.parent
    assert parent is not None
    parent.setLevel(logging.WARNING)
    AccessLog(logger)("POST", "/chatgpt/", 200, 1.0)
    assert stream.getvalue() == ""
    parent.setLevel(logging.INFO)
    # An operator silencing probes: a filter on the access logger, or on the handler.
    logger.addFilter(lambda record: "/health" not in record.getMessage())
    assert sole_line_handler(logger) is None
    AccessLog(logger)("GET", "/health", 200, 1.0)
    AccessLog(logger)("GET", "/ready", 200, 1.0)
    logger.filters.clear()
    handler = parent.handlers[0]
    handler.addFilter(lambda record: "/metrics" not in record.getMessage())
    assert sole_line_handler(logger) is None
    AccessLog(logger)("GET", "/metrics", 200, 1.0)
    handler.filters.clear()
    text = stream.getvalue()
    assert "/health" not in text and "/metrics" not in text and "GET /ready 200" in text
