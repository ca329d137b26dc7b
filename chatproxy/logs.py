"""Logging: request ids on every line, secrets scrubbed from every line, text or JSON."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

from chatproxy.redact import Redactor

REQUEST_ID_HEADER = "X-Request-ID"
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class LineHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler that stamps each record with the id of the request being served.

    It also flushes the stream directly: `handle` already holds the lock, and the base
    class's `flush` would take it a second time on every line.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.request_id = request_id_var.get()
            self.stream.write(self.format(record) + self.terminator)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


class RedactingFormatter(logging.Formatter):
    """Formats, then scrubs: covers messages, arguments and tracebacks alike."""

    def __init__(self, redactor: Redactor, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.redactor = redactor
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The default format, with strftime run once a second rather than once a line."""
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
        return f"{self._stamp},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        """`logging.Formatter.format` for a format that always has a time, then scrubbed.

        Only the message and the traceback are scrubbed: the other fields are ours (time,
        level, logger, a request id that `_SAFE_REQUEST_ID` vetted), and scrubbing a
        quarter of the line costs a quarter as much. Written out because the base class
        asks the format string twice per line whether it uses the time.
        """
        record.message = self.redactor(record.getMessage())
        record.asctime = self.formatTime(record)
        text = self._style._fmt % record.__dict__
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redactor(self.formatException(record.exc_info))
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.redactor(self.formatStack(record.stack_info))}"
        return text


class JsonFormatter(RedactingFormatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": self.redactor(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = self.redactor(self.formatException(record.exc_info))
        # Scrubbed before encoding: JSON escapes would hide a secret holding a quote or `\`.
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(
    level: str, fmt: str, redactor: Redactor, stream: TextIO | None = None
) -> logging.Handler:
    """Route every logger through one scrubbing handler on the root logger."""
    handler = LineHandler(stream or sys.stderr)
    formatter = (
        JsonFormatter(redactor) if fmt == "json" else RedactingFormatter(redactor, TEXT_FORMAT)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The logging HOWTO's "Optimization" switches: no format here uses these fields, and
    # gathering them costs a measurable share of every access line.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no caller lookup: the formats name the logger, not the line
    return handler
