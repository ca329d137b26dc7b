"""Every route the router holds, walked: with keys on, none but /health, /ready and the
public pages answers without a key — including routes added after this test was written."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import web

from tests.conftest import Client, Proxy

KEY = "route-walk-key-0123"
PUBLIC = {"/health", "/ready", "/", "/docs", "/redoc", "/openapi.json"}
PUBLIC_PREFIXES = ("/static/", "/docs/")
_PLACEHOLDER = re.compile(r"\{[^}]+\}")


def concrete_path(resource: web.AbstractResource) -> str:
    """A path the resource matches: every `{name}` filled, a static folder's file named."""
    info = resource.get_info()
    if "prefix" in info and "directory" in info:
        return f"{info['prefix'].rstrip('/')}/x.js"
    return _PLACEHOLDER.sub("x", resource.canonical)


def routes_of(client: Client) -> list[tuple[str, str]]:
    found = set()
    for route in client.app.router.routes():
        if route.method == "HEAD" or route.resource is None:  # HEAD: beside each GET
            continue
        method = "POST" if route.method == "*" else route.method
        found.add((method, concrete_path(route.resource)))
    return sorted(found)


def is_public(path: str, root: str, metrics_public: bool) -> bool:
    inner = path.removeprefix(root) or "/" if path.startswith(root) else path
    if metrics_public and inner == "/metrics":
        return True
    return inner in PUBLIC or inner.startswith(PUBLIC_PREFIXES)


@pytest.mark.parametrize("root", ["", "/chatproxy"])
async def test_no_route_answers_without_a_key(proxy: Proxy, root: str) -> None:
    client = await proxy(proxy_api_keys=KEY, history_store="memory://", root_path=root)
    walked = routes_of(client)
    assert (("POST", f"{root}/v1/chat/completions")) in walked
    assert any(path.startswith(f"{root}/history") for _, path in walked), "history routes"
    for method, path in walked:
        answer = await client.request(method, path, json={})
        if is_public(path, root, metrics_public=False):
            assert answer.status != 401, f"{method} {path} is public"
        else:
            assert answer.status == 401, f"{method} {path} answered {answer.status} without a key"
            assert (await answer.read()).startswith(b'{"error"')


async def test_the_401_says_how_to_send_a_key_in_words_the_redactor_leaves(
    proxy: Proxy,
) -> None:
    """Error bodies go through the log's redactor, which masks whatever follows "Bearer ":
    a message naming the header in that form reached clients as "Bearer ***"."""
    client = await proxy(proxy_api_keys=KEY)
    body = await (await client.get("/models")).json()
    assert "Authorization header" in body["error"]
    assert "***" not in body["error"]


async def test_metrics_opens_only_when_told(proxy: Proxy) -> None:
    closed = await proxy(proxy_api_keys=KEY)
    assert (await closed.get("/metrics")).status == 401
    opened = await proxy(proxy_api_keys=KEY, metrics_require_key=False)
    assert (await opened.get("/metrics")).status == 200
    assert (await opened.get("/status")).status == 401


@pytest.mark.parametrize("presented", [b"Bearer \xff\xfe", b"Bearer route-walk-key-0123\xff"])
async def test_a_key_that_is_not_utf8_is_refused_not_a_crash(
    proxy: Proxy, presented: bytes
) -> None:
    """Header bytes reach the key check as they came (aiohttp keeps undecodable ones as
    surrogates): a 401 in JSON, never a 500."""
    client = await proxy(proxy_api_keys=KEY)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"GET /status HTTP/1.1\r\nHost: chatproxy\r\nConnection: close\r\n"
        b"Authorization: " + presented + b"\r\n\r\n"
    )
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), head
    assert body.startswith(b'{"error"')
