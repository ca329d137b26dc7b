"""The secret guard itself: it sees what a leaking app writes, and only chatproxy's apps.

Each test takes the violations it provoked (`secret_guard.take()`), so the suite stays green.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from chatproxy.app import create_app
from chatproxy.keys import SETTINGS
from tests.conftest import AiohttpClient, AiohttpServer, make_settings, started
from tests.fakes.gigachat_server import CREDENTIALS, SCOPE, FakeGigaChat
from tests.secret_guard import SecretGuard, Violation, describe

KEY = "sk-guard-selftest-0123456789"


def leaky_app(**settings: str) -> web.Application:
    """Holds chatproxy's SETTINGS, so the guard takes it for chatproxy, and leaks KEY."""
    app = web.Application()
    app[SETTINGS] = make_settings(openai_api_key=KEY, **settings)

    async def header(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"X-Debug": f"key {KEY}"})

    async def body(request: web.Request) -> web.Response:
        return web.json_response({"error": f"upstream said: bad key {KEY}"})

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        half = len(KEY) // 2  # split across two writes
        await resp.write(f"event: error\ndata: {KEY[:half]}".encode())
        await resp.write(f"{KEY[half:]}\n\n".encode())
        return resp

    async def log(request: web.Request) -> web.Response:
        # DEBUG: the guard checks records whatever level the logger is set to.
        logging.getLogger("chatproxy.selftest").debug("upstream rejected %s", KEY)
        return web.Response(text="ok")

    for path, handler in (("/header", header), ("/body", body), ("/log", log)):
        app.router.add_get(path, handler)
    app.router.add_get("/stream", stream)
    return app


async def test_the_guard_sees_headers_bodies_streams_and_logs(
    aiohttp_client: AiohttpClient, secret_guard: SecretGuard
) -> None:
    client = await aiohttp_client(leaky_app())
    for path in ("/header", "/body", "/stream", "/log"):
        assert (await client.get(path)).status == 200
    found = secret_guard.take()
    assert {str(v) for v in found} == {
        "setting openai_api_key in response header X-Debug of GET /header",
        "setting openai_api_key in response body of GET /body",
        "setting openai_api_key in response stream of GET /stream",
        "setting openai_api_key in log line of chatproxy.selftest at DEBUG",
    }
    assert KEY not in describe(found), "the report names the kind, never the secret"


async def test_the_guard_ignores_apps_that_are_not_chatproxy(
    aiohttp_client: AiohttpClient, secret_guard: SecretGuard
) -> None:
    app = web.Application()

    async def body(request: web.Request) -> web.Response:
        return web.json_response({"access_token": KEY})

    app.router.add_get("/", body)
    client = await aiohttp_client(app)
    await client.get("/")
    logging.getLogger("tests.selftest").warning("not chatproxy's: %s", KEY)
    assert secret_guard.take() == []


async def test_chatproxy_masks_what_the_guard_looks_for(
    aiohttp_client: AiohttpClient, secret_guard: SecretGuard
) -> None:
    """The real app with secrets configured writes none of them (a negative control)."""
    settings = make_settings(
        openai_api_key=KEY, upstream_proxy="http://user:proxy-pass-9876@127.0.0.1:3128"
    )
    client = await aiohttp_client(create_app(settings))
    for path in ("/status", "/health", "/ready", "/models", "/nope"):
        await client.get(path)
    logging.getLogger("chatproxy.selftest").warning("as the process logs it: %s", KEY)
    assert secret_guard.take() == [], "chatproxy's own redactor masks its configured key"
    assert "the upstream_proxy password" in secret_guard.secrets.values()


async def test_issued_tokens_and_encoded_forms_are_secrets(
    aiohttp_server: AiohttpServer, secret_guard: SecretGuard
) -> None:
    fake = await started(aiohttp_server, FakeGigaChat())
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake.base}/api/v2/oauth",
            data={"scope": SCOPE},
            headers={
                "Authorization": f"Basic {CREDENTIALS}",
                "RqUID": "6f0b1291-c7f3-43c6-bb2e-9f3efb2dc98e",
            },
        ) as resp,
    ):
        token = (await resp.json())["access_token"]
    assert secret_guard.take() == [], "the fake's own answer is not chatproxy's"
    found = secret_guard.check(json.dumps({"t": token}), "a body")
    assert found == [Violation("an access token a fake issued at POST /api/v2/oauth", "a body")]
    assert secret_guard.check(f"?creds={quote(CREDENTIALS, safe='')}", "a URL") == [
        Violation("the fake GigaChat's credentials", "a URL")
    ]
    assert secret_guard.check("giga-secret-value", "a line") == [
        Violation("the fake GigaChat's client secret", "a line")
    ]
    assert secret_guard.check("nothing to see", "a line") == []
    secret_guard.take()


@pytest.mark.parametrize("method", ["info", "warning", "exception"])
def test_log_records_are_checked_at_every_level(method: str, secret_guard: SecretGuard) -> None:
    secret_guard.secrets["guard-only-secret"] = "a planted secret"
    logger = logging.getLogger("chatproxy.selftest")
    try:
        raise RuntimeError("guard-only-secret")
    except RuntimeError:
        getattr(logger, method)("failed")
    found = secret_guard.take()
    if method == "exception":
        assert [v.kind for v in found] == ["a planted secret"], "tracebacks are checked"
    else:
        assert found == []
