"""The suite-wide secret guard: no configured secret, and no OAuth token a fake issued, in
anything chatproxy writes: response headers, bodies, stream chunks and log lines.

Loaded by conftest as a plugin. A chatproxy app is any `web.Application` given
`chatproxy.keys.SETTINGS`, however the test built it; every other app is a fake upstream,
never checked, and each `access_token` one of them answers with (any fake's OAuth
endpoint, whoever wrote it) becomes a secret of the test. Log records of `chatproxy*`
loggers are checked as chatproxy's formatter would write them, at every level, whatever
the test's logging levels; the records themselves, and what handlers receive, are left as
they were. A violation fails the test in which it happened, naming the secret's kind and
where it appeared, never the secret.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import sys
import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from aiohttp import web
from aiohttp.payload import BytesPayload
from pydantic import SecretStr
from yarl import URL

from chatproxy.config import Settings
from chatproxy.keys import SETTINGS
from chatproxy.logs import LineHandler, RedactingFormatter
from chatproxy.redact import Redactor
from tests.conftest import OPENAI_KEY
from tests.fakes import ernie_server, gigachat_server

MIN_LENGTH = 4  # as Settings.secrets(): shorter values are not treated as secrets
TAIL = 512  # bytes of a stream kept, to catch a secret split across two writes
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


@dataclass(frozen=True)
class Violation:
    kind: str
    where: str

    def __str__(self) -> str:
        return f"{self.kind} in {self.where}"


@functools.cache
def forms(value: str) -> frozenset[bytes]:
    """The secret as written plain, inside a JSON string, and URL-encoded."""
    shapes = {value, json.dumps(value)[1:-1], quote(value, safe=""), quote_plus(value)}
    return frozenset(shape.encode() for shape in shapes)


def fixed_secrets() -> dict[str, str]:
    """The test credentials every fake and conftest hands out: value -> kind."""
    found = {
        OPENAI_KEY: "the tests' OpenAI key",
        ernie_server.API_KEY: "the fake ERNIE's API key",
        ernie_server.SECRET_KEY: "the fake ERNIE's secret key",
        gigachat_server.CREDENTIALS: "the fake GigaChat's credentials",
    }
    secret = client_secret(gigachat_server.CREDENTIALS)
    if secret:
        found[secret] = "the fake GigaChat's client secret"
    return found


def client_secret(credentials: str) -> str | None:
    """The secret half of a base64 `client_id:client_secret` (GigaChat's authorization key)."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


def settings_secrets(settings: Settings) -> dict[str, str]:
    """Every secret of one app's settings: value -> kind (the setting's name)."""
    found: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        # A store URL is secret for the password it may hold: Settings.secrets() names the
        # URL and its passwords when it holds one (sqlite:///./chatproxy.db shows as it is).
        if isinstance(value, SecretStr) and name != "history_store":
            found[value.get_secret_value()] = f"setting {name}"
    for key in settings.api_keys:
        found[key] = "a PROXY_API_KEYS key"
    if settings.gigachat_credentials is not None:
        secret = client_secret(settings.gigachat_credentials.get_secret_value())
        if secret:
            found[secret] = "the client secret inside gigachat_credentials"
    if settings.upstream_proxy is not None:
        password = URL(settings.upstream_proxy.get_secret_value()).password
        if password:
            found[password] = "the upstream_proxy password"
    for value in settings.secrets():
        found.setdefault(value, "a Settings.secrets() value")
    return found


class _AllRedactors(Redactor):
    """Every Redactor of the test in turn: in the process the app's one formats each line."""

    def __init__(self, chain: weakref.WeakSet[Redactor]) -> None:
        super().__init__()
        self._chain = chain

    def __call__(self, text: str) -> str:
        for redactor in list(self._chain):
            text = redactor(text)
        return super().__call__(text)


@dataclass
class _Watched:
    where: str
    tail: bytes = b""


@dataclass
class SecretGuard:
    """What the current test may not leak, and what it leaked."""

    secrets: dict[str, str] = field(default_factory=dict)  # value -> kind
    redactors: weakref.WeakSet[Redactor] = field(default_factory=weakref.WeakSet)
    violations: list[Violation] = field(default_factory=list)
    responses: weakref.WeakKeyDictionary[web.StreamResponse, _Watched] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def __post_init__(self) -> None:
        self.formatter = RedactingFormatter(_AllRedactors(self.redactors))

    def start_test(self) -> None:
        self.secrets = fixed_secrets()
        self.redactors.clear()
        self.violations.clear()

    def take(self) -> list[Violation]:
        found, self.violations = self.violations, []
        return found

    def check(self, data: bytes | bytearray | str, where: str) -> list[Violation]:
        """Records (and returns) every secret found in `data`."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        found = []
        for value, kind in list(self.secrets.items()):
            if len(value) >= MIN_LENGTH and any(shape in raw for shape in forms(value)):
                violation = Violation(kind, where)
                found.append(violation)
                if violation not in self.violations:
                    self.violations.append(violation)
        return found

    # What chatproxy writes: apps, responses, stream chunks, log lines.

    def watch_app(self, app: web.Application) -> None:
        self.secrets.update(settings_secrets(app[SETTINGS]))
        if not app.pre_frozen and self.on_response_prepare not in app.on_response_prepare:
            app.on_response_prepare.append(self.on_response_prepare)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        where = f"{request.method} {request.path}"
        self.responses[response] = _Watched(where)
        for name, value in response.headers.items():
            self.check(value, f"response header {name} of {where}")
        body: Any = response.body if isinstance(response, web.Response) else None
        if isinstance(body, BytesPayload):
            body = body.decode("utf-8", "replace").encode()
        if isinstance(body, bytes | bytearray):
            self.check(body, f"response body of {where}")

    def written(self, response: web.StreamResponse, data: bytes | bytearray | memoryview) -> None:
        watched = self.responses.get(response)
        if watched is None:
            if b'"access_token"' in data and isinstance(response, web.Response):
                self.issued(response, bytes(data))
            return
        # A Response's body was read at prepare, before any compression.
        if not data or isinstance(response, web.Response):
            return
        chunk = watched.tail + bytes(data)
        self.check(chunk, f"response stream of {watched.where}")
        watched.tail = chunk[-TAIL:]

    def issued(self, response: web.Response, body: bytes) -> None:
        """A fake's OAuth answer: its token is a secret from now on."""
        try:
            token = json.loads(body).get("access_token")
        except (ValueError, AttributeError):
            return
        if isinstance(token, str):
            request = response._req
            where = f" at {request.method} {request.path}" if request is not None else ""
            self.secrets[token] = f"an access token a fake issued{where}"

    def logged(self, logger: logging.Logger, method: str, args: Any, kwargs: Any) -> None:
        """A record as chatproxy's formatter would write it, whether or not it is emitted."""
        try:
            if method == "log":
                level, msg, *rest = args
            else:
                level, (msg, *rest) = LEVELS[method], args
            exc_info = kwargs.get("exc_info", method == "exception")
            if isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            elif exc_info and not isinstance(exc_info, tuple):
                exc_info = sys.exc_info()
            record = logging.LogRecord(
                logger.name, level, "(guard)", 0, msg, tuple(rest), exc_info or None
            )
            text = self.formatter.format(record)
        except Exception:  # a malformed call: logging reports those itself
            return
        self.check(text, f"log line of {logger.name} at {logging.getLevelName(level)}")


GUARD = SecretGuard()


def _is_ours(name: str) -> bool:
    return name == "chatproxy" or name.startswith("chatproxy.")


def install(guard: SecretGuard) -> Callable[[], None]:
    """Patch the places chatproxy's output passes through; returns the undo."""
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = owner.__dict__[name]
        saved.append((owner, name, original))
        setattr(owner, name, make(original))

    def setitem(original: Any) -> Any:
        def __setitem__(self: web.Application, key: Any, value: Any) -> None:
            original(self, key, value)
            if key is SETTINGS:
                guard.watch_app(self)

        return __setitem__

    def write(original: Any) -> Any:
        async def write(self: web.StreamResponse, data: bytes) -> None:
            guard.written(self, data)
            await original(self, data)

        return write

    def write_eof(original: Any) -> Any:
        async def write_eof(self: web.StreamResponse, data: bytes = b"") -> None:
            guard.written(self, data)
            await original(self, data)

        return write_eof

    def redactor_init(original: Any) -> Any:
        def __init__(self: Redactor, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            if type(self) is not _AllRedactors:
                guard.redactors.add(self)

        return __init__

    def log_method(method: str) -> Callable[[Any], Any]:
        def make(original: Any) -> Any:
            def logged(self: logging.Logger, *args: Any, **kwargs: Any) -> None:
                if _is_ours(self.name):
                    guard.logged(self, method, args, kwargs)
                # One frame more between the caller and logging: records keep their caller.
                kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
                original(self, *args, **kwargs)

            return logged

        return make

    def write_line(original: Any) -> Any:
        def write_line(self: LineHandler, text: str) -> None:
            guard.check(text, "an access log line")
            original(self, text)

        return write_line

    patch(web.Application, "__setitem__", setitem)
    patch(web.StreamResponse, "write", write)
    patch(web.StreamResponse, "write_eof", write_eof)
    patch(Redactor, "__init__", redactor_init)
    for method in (*LEVELS, "log"):
        patch(logging.Logger, method, log_method(method))
    patch(LineHandler, "write_line", write_line)

    def undo() -> None:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)

    return undo


def describe(violations: list[Violation]) -> str:
    lines = "\n".join(f"  - {v}" for v in violations)
    return f"secret guard: chatproxy wrote a secret ({len(violations)} place(s)):\n{lines}"


@pytest.fixture(scope="session", autouse=True)
def _secret_guard_installed() -> Iterator[SecretGuard]:
    undo = install(GUARD)
    yield GUARD
    undo()


@pytest.fixture(autouse=True)
def secret_guard(_secret_guard_installed: SecretGuard) -> Iterator[SecretGuard]:
    """Per test: a fresh registry; leaks during teardown fail the test here."""
    GUARD.start_test()
    yield GUARD
    found = GUARD.take()
    if found:
        pytest.fail(describe(found), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Leaks during set-up or the test itself fail the test's call phase."""
    report = yield
    if report.when == "call":
        found = GUARD.take()
        if found:
            if report.failed:
                report.sections.append(("secret guard", describe(found)))
            else:
                report.outcome = "failed"
                report.longrepr = describe(found)
    return report
