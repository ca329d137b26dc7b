"""Logging: request ids on every line, secrets scrubbed from every line, text or JSON."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler, WatchedFileHandler
from pathlib import Path
from typing import TextIO

from chatproxy.redact import Redactor

REQUEST_ID_HEADER = "X-Request-ID"
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
# The client's address behind TRUSTED_PROXIES (chatproxy.gateway), for the access line.
forwarded_client_var: ContextVar[str | None] = ContextVar("forwarded_client", default=None)


class RedactingFormatter(logging.Formatter):
    """`time LEVEL logger [request id] message`, with secrets scrubbed from the message
    and any traceback (every other field is ours: never a secret)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._second = -1
        self._stamp = ""

    def timestamp(self, created: float, msecs: float) -> str:
        """The default time format, with strftime run once a second rather than per line."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(created))
        return f"{self._stamp},{int(msecs):03d}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.timestamp(record.created, record.msecs)

    def line(self, created: float, level: str, logger: str, request_id: str, message: str) -> str:
        """One line without its traceback: `format` and `AccessLog` share it."""
        msecs = (created - int(created)) * 1000
        return f"{self.timestamp(created, msecs)} {level} {logger} [{request_id}] " + (
            self.redactor(message)
        )

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        text = self.line(
            record.created,
            record.levelname,
            record.name,
            getattr(record, "request_id", "-"),
            record.message,
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redactor(self.formatException(record.exc_info))
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.redactor(self.formatStack(record.stack_info))}"
        return text


class JsonFormatter(RedactingFormatter):
    """One JSON object per line, for log shippers."""

    def _entry(
        self, created: float, level: str, logger: str, request_id: str, message: str
    ) -> dict[str, str]:
        # Scrubbed before encoding: JSON escapes would hide a secret holding a quote or `\`.
        return {
            "ts": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "logger": logger,
            "request_id": request_id,
            "message": self.redactor(message),
        }

    def line(self, created: float, level: str, logger: str, request_id: str, message: str) -> str:
        return json.dumps(
            self._entry(created, level, logger, request_id, message), ensure_ascii=False
        )

    def format(self, record: logging.LogRecord) -> str:
        entry = self._entry(
            record.created,
            record.levelname,
            record.name,
            getattr(record, "request_id", "-"),
            record.getMessage(),
        )
        if record.exc_info:
            entry["exc"] = self.redactor(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


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

    def write_line(self, text: str) -> None:
        """A line formatted by `RedactingFormatter.line`, written as `emit` writes."""
        with self.lock:  # type: ignore[union-attr]  # set by Handler.__init__
            self.stream.write(text + self.terminator)
            self.stream.flush()


def sole_line_handler(logger: logging.Logger) -> LineHandler | None:
    """Our handler when every record of `logger` would go to it alone and pass no filter
    (a logger's own filters, and every handler's): only then may a line skip `logging`'s
    record without anyone noticing. Ancestors' filters never see propagated records."""
    if logger.filters:
        return None
    found: LineHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None or not isinstance(handler, LineHandler) or handler.filters:
                return None
            found = handler
        current = current.parent if current.propagate else None
    if found is None or found.level > logging.INFO:
        return None
    return found if isinstance(found.formatter, RedactingFormatter) else None


class AccessLog:
    """The one line every request logs: `METHOD path status time`.

    Through `logging` it cost about 60k instructions, a sixth of what chatproxy adds to
    a request. When chatproxy's own handler is the line's only destination, the line is
    formatted by that handler's formatter and written under its lock, the same text
    without building a `LogRecord`; anything else (an operator's handlers, pytest's
    caplog, filters) gets an ordinary record.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("chatproxy.access")

    def __call__(self, method: str, path: str, status: int, elapsed_ms: float) -> None:
        logger = self.logger
        if logger.disabled or not logger.isEnabledFor(logging.INFO):
            return
        if not path.isprintable():
            # The client's path (`%0A` decodes to a newline) must not forge a line of its own
            # in the text format, nor send a terminal escape to whoever tails the log.
            path = path.encode("unicode_escape").decode("ascii")
        client = forwarded_client_var.get()
        handler = sole_line_handler(logger)
        if handler is None:
            if client is None:
                logger.info("%s %s %d %.1fms", method, path, status, elapsed_ms)
            else:
                logger.info("%s %s %d %.1fms client=%s", method, path, status, elapsed_ms, client)
            return
        formatter: RedactingFormatter = handler.formatter  # type: ignore[assignment]
        message = f"{method} {path} {status} {elapsed_ms:.1f}ms"
        if client is not None:
            message = f"{message} client={client}"
        try:
            line = formatter.line(time.time(), "INFO", logger.name, request_id_var.get(), message)
            handler.write_line(line)
        except Exception:  # the stream failed: let logging report it its usual way
            logger.info("%s", message)


def setup_logging(
    level: str, fmt: str, redactor: Redactor, stream: TextIO | None = None
) -> logging.Handler:
    """Route every logger through one scrubbing handler on the root logger."""
    handler = LineHandler(stream or sys.stderr)
    formatter = JsonFormatter(redactor) if fmt == "json" else RedactingFormatter(redactor)
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


class StampRequestId(logging.Filter):
    """What LineHandler.emit does for the console, for handlers of the standard library."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def add_log_file(
    path: Path, *, max_bytes: int, backups: int, fmt: str, redactor: Redactor
) -> logging.Handler:
    """LOG_FILE: the console's lines, scrubbed the same way, also in a file, rotated at
    `max_bytes` keeping `backups` old files; with `max_bytes` 0 logrotate moves it away and
    the file is reopened at the next line (WatchedFileHandler). OSError if it cannot open."""
    handler: logging.FileHandler
    if max_bytes > 0:
        handler = RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
    else:
        handler = WatchedFileHandler(path, encoding="utf-8")
    handler.addFilter(StampRequestId())
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else RedactingFormatter(redactor))
    logging.getLogger().addHandler(handler)
    return handler
