"""Schemathesis against `/openapi.json`: the real app on a local port, its upstreams faked,
every documented operation fuzzed; no 5xx of ours, and every answer as documented.

Deterministic (derandomized Hypothesis) and bounded: a few examples per operation.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, settings
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chatproxy.app import create_app
from chatproxy.config import Settings
from chatproxy.openapi.__main__ import full_app
from chatproxy.openapi.document import build_document
from tests.conftest import OPENAI_KEY, ernie_settings, gigachat_settings, make_settings
from tests.fakes.ernie_server import FakeErnie
from tests.fakes.gigachat_server import FakeGigaChat
from tests.fakes.openai_server import FakeOpenAI, completion_body, stream

KEY = "schemathesis-key-0123456789"
EXAMPLES = 8
T = TypeVar("T")


async def answer_as_asked(request: web.Request) -> web.StreamResponse:
    """OpenAI's answer, streamed when the request asks for a stream."""
    body = await request.json()
    if body.get("stream"):
        return await stream(["Hel", "lo"])(request)
    return web.json_response(completion_body("Hello"))


class LiveApp:
    """chatproxy and its fake upstreams on local ports, on a loop of their own: schemathesis
    calls synchronously, and must not block the loop that serves it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    async def serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()

    def close(self) -> None:
        self.run(self.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@contextmanager
def clean_environment() -> Iterator[None]:
    """As the suite's `isolated_env`, which is per test: module-wide here."""
    with pytest.MonkeyPatch.context() as patch:
        for name in Settings.model_fields:
            patch.delenv(name.upper(), raising=False)
        yield


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    live = LiveApp()
    try:
        openai = FakeOpenAI(default=answer_as_asked)
        gigachat, ernie = FakeGigaChat(), FakeErnie()
        openai_url = live.run(live.serve(openai.app()))
        gigachat.base = live.run(live.serve(gigachat.app()))
        ernie.base = live.run(live.serve(ernie.app()))
        folder: Path = tmp_path_factory.mktemp("schemathesis")
        with clean_environment():
            app_settings = make_settings(
                openai_api_key=OPENAI_KEY,
                openai_base_url=f"{openai_url}/v1",
                **gigachat_settings(gigachat),
                **ernie_settings(ernie),
                proxy_api_keys=KEY,
                history_store=f"sqlite:///{folder / 'history.db'}",
                upstream_timeout=5.0,
            )
        yield live.run(live.serve(create_app(app_settings)))
    finally:
        live.close()


def documented_schema() -> BaseSchema:
    """The document of an app with every optional route on, built here rather than fetched
    (schemathesis's lazy fixture loading predates pytest 9); a test below checks it is the
    one the live server answers."""
    with clean_environment(), tempfile.TemporaryDirectory() as folder:
        return schemathesis.openapi.from_dict(build_document(full_app(Path(folder))))


schema = documented_schema()
OperationTest = Callable[[schemathesis.Case[Any], str], None]
# Typed here: schemathesis annotates the decorator as a bare Callable.
every_operation: Callable[[OperationTest], OperationTest] = schema.parametrize()


def test_the_live_server_answers_the_fuzzed_document(base_url: str) -> None:
    live = requests.get(f"{base_url}/openapi.json", timeout=10).json()
    with clean_environment(), tempfile.TemporaryDirectory() as folder:
        assert live == build_document(full_app(Path(folder)))


# Deliberate 503s the document describes: a provider left unconfigured (`local`: no model
# in this test) and `/ready` saying so. Any other 5xx is a bug of ours.
DELIBERATE_503 = ("is not configured", "not_ready")


def no_server_error_of_ours(response: Any) -> None:
    if response.status_code < 500:
        return
    text = response.text
    if response.status_code == 503 and any(reason in text for reason in DELIBERATE_503):
        return
    raise AssertionError(f"{response.status_code} from {response.request.url}: {text[:500]}")


# Not `negative_data_rejection`: pydantic's lax mode takes `"stream": 0` as false, more
# than the document's schema allows; the document is the stricter of the two on purpose.
@every_operation
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case: schemathesis.Case[Any], base_url: str) -> None:
    response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"})
    no_server_error_of_ours(response)
    case.validate_response(
        response,
        checks=[
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
        ],
    )


def test_keys_are_required_exactly_where_the_document_says(base_url: str) -> None:
    """Each documented operation without a key: a 401 where it names the bearer scheme,
    never where it is public."""
    document = schema.raw_schema
    for path, item in document["paths"].items():
        url = base_url + re.sub(r"\{[^}]+\}", "x", path)
        for method, operation in item.items():
            response = requests.request(method, url, timeout=10, json={})
            if operation["security"]:
                assert response.status_code == 401, (method, path, response.status_code)
            else:
                assert response.status_code != 401, (method, path)
