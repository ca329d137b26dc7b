"""Behind a gateway and in a browser: X-Forwarded-For from TRUSTED_PROXIES only, every route
under ROOT_PATH, CORS preflights and answers with the credentials rule."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from chatproxy.app import create_app
from chatproxy.gateway import TrustedProxies, normalized_root, parse_networks, path_under
from tests.conftest import Client, Proxy, make_settings

HELLO = {"messages": [{"role": "user", "content": "hi"}]}
V1_HELLO = {"model": "chatgpt/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
PAGE = "https://chat.example.com"


async def chat_from(client: Client, forwarded: str) -> Any:
    return await client.post("/chatgpt/", json=HELLO, headers={"X-Forwarded-For": forwarded})


# --- X-Forwarded-For ----------------------------------------------------------------------


async def test_trusted_proxy_forwards_the_client_address(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    # The test client connects from 127.0.0.1: here the gateway.
    client = await proxy(rate_limit_rpm=1, trusted_proxies="127.0.0.1, 10.0.0.0/8")
    caplog.set_level(logging.INFO, "chatproxy.access")
    first = await chat_from(client, "203.0.113.7")
    assert first.status == 200
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    # Another client behind the same gateway has its own budget.
    assert (await chat_from(client, "198.51.100.1, 203.0.113.8, 10.1.2.3")).status == 200
    assert (await chat_from(client, "203.0.113.7")).status == 429
    lines = [r.getMessage() for r in caplog.records if r.name == "chatproxy.access"]
    assert lines[0].endswith("client=203.0.113.7")
    assert lines[1].endswith("client=203.0.113.8")  # the right-most untrusted hop


async def test_untrusted_peer_cannot_pick_its_address(proxy: Proxy) -> None:
    client = await proxy(rate_limit_rpm=1, trusted_proxies="10.0.0.0/8")
    assert (await chat_from(client, "203.0.113.7")).status == 200
    # A forged header from an untrusted peer changes nothing: the same budget, spent.
    refused = await chat_from(client, "203.0.113.99")
    assert refused.status == 429


def test_the_client_is_the_rightmost_untrusted_hop() -> None:
    trusted = TrustedProxies(parse_networks("10.0.0.0/8, 192.0.2.1, 2001:db8::/32"))
    assert trusted.client("10.0.0.5", ["203.0.113.7"]) == "203.0.113.7"
    # The client's own entry (left of the first untrusted hop) is ignored.
    assert trusted.client("10.0.0.5", ["6.6.6.6", "203.0.113.7", "192.0.2.1"]) == "203.0.113.7"
    assert trusted.client("10.0.0.5", ["10.9.9.9", "10.1.1.1"]) == "10.9.9.9"  # all trusted
    assert trusted.client("203.0.113.50", ["6.6.6.6"]) == "203.0.113.50"  # untrusted peer
    assert trusted.client("10.0.0.5", ["[2001:db9::1]:443"]) == "2001:db9::1"
    assert trusted.client("10.0.0.5", ["203.0.113.7:5555"]) == "203.0.113.7"
    assert trusted.client("10.0.0.5", ["not-an-address"]) == "10.0.0.5"
    assert trusted.client("::ffff:10.0.0.5", ["203.0.113.7"]) == "203.0.113.7"
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        parse_networks("10.0.0.0/8, gateway.local")


# --- ROOT_PATH ----------------------------------------------------------------------------


def test_root_path_helpers() -> None:
    assert normalized_root("/chatproxy/") == normalized_root("chatproxy") == "/chatproxy"
    assert normalized_root(" / ") == ""
    assert path_under("/chatproxy", "/chatproxy") == "/"
    assert path_under("/chatproxy", "/chatproxy/v1/models") == "/v1/models"
    assert path_under("/chatproxy", "/chatproxyx/v1") is None
    assert path_under("/chatproxy", "/v1/models") is None


async def test_every_route_answers_under_root_path(proxy: Proxy) -> None:
    client = await proxy(root_path="/chatproxy/")
    native = await client.post("/chatproxy/chatgpt/", json=HELLO)
    assert native.status == 200
    assert (await native.json())["messages"][-1]["content"] == "Hello!"
    assert (await client.post("/chatproxy/v1/chat/completions", json=V1_HELLO)).status == 200
    assert (await client.get("/chatproxy/v1/models")).status == 200
    for path in ("/chatproxy/health", "/chatproxy/ready", "/health", "/ready"):
        assert (await client.get(path)).status == 200, path
    # The docs and the chat page, which other routes put there with relative URLs.
    assert (await client.get("/chatproxy/openapi.json")).status == 200
    assert (await client.get("/chatproxy/")).status == 200
    bare = await client.get("/chatproxy", allow_redirects=False)
    assert bare.status == 308 and bare.headers["Location"] == "/chatproxy/"


async def test_outside_root_path_is_our_json_404(proxy: Proxy) -> None:
    client = await proxy(root_path="/chatproxy")
    for method, path in (("POST", "/chatgpt/"), ("GET", "/v1/models"), ("GET", "/status")):
        answer = await client.request(method, path, json=HELLO)
        assert answer.status == 404, path
        assert (await answer.json())["type"] == "not_found"
    # Errors under the prefix keep their surface's envelope.
    bad = await client.post("/chatproxy/v1/chat/completions", json={"model": "x"})
    assert bad.status == 400
    assert (await bad.json())["error"]["type"] == "invalid_request_error"


async def test_root_path_with_keys(proxy: Proxy) -> None:
    client = await proxy(root_path="/chatproxy", proxy_api_keys="gateway-key-1")
    assert (await client.get("/chatproxy/health")).status == 200
    assert (await client.get("/health")).status == 200
    assert (await client.get("/chatproxy/status")).status == 401
    authorized = {"Authorization": "Bearer gateway-key-1"}
    assert (await client.get("/chatproxy/status", headers=authorized)).status == 200
    assert (await client.get("/status")).status == 404  # outside: nothing there to guard


# --- CORS ---------------------------------------------------------------------------------


def preflight_headers(origin: str = PAGE) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
    }


async def test_preflight_needs_no_key_and_names_what_is_allowed(proxy: Proxy) -> None:
    client = await proxy(cors_origins=f"{PAGE}, https://other.example.com", proxy_api_keys="k-123")
    answer = await client.options("/v1/chat/completions", headers=preflight_headers())
    assert answer.status == 204
    headers = answer.headers
    assert headers["Access-Control-Allow-Origin"] == PAGE
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    allowed = headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert int(headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in headers["Vary"]


async def test_preflight_from_another_origin_is_refused(proxy: Proxy) -> None:
    client = await proxy(cors_origins=PAGE)
    answer = await client.options(
        "/v1/chat/completions", headers=preflight_headers("https://evil.example.com")
    )
    assert answer.status == 400
    assert "Access-Control-Allow-Origin" not in answer.headers


@pytest.mark.parametrize(
    "origin",
    [
        f"{PAGE}.evil.example",  # the listed host as a prefix of another
        "https://evil-chat.example.com",
        "http://chat.example.com",  # another scheme is another origin
        "https://chat.example.com:8443",
        "null",  # sandboxed frames and file:// pages
    ],
)
async def test_look_alike_origins_are_neither_preflighted_nor_echoed(
    proxy: Proxy, origin: str
) -> None:
    client = await proxy(cors_origins=PAGE, proxy_api_keys="k-123")
    pre = await client.options("/v1/chat/completions", headers=preflight_headers(origin))
    assert pre.status == 400
    answer = await client.get(
        "/status", headers={"Origin": origin, "Authorization": "Bearer k-123"}
    )
    assert answer.status == 200
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert "Access-Control-Allow-Credentials" not in answer.headers


async def test_answers_carry_cors_headers_for_allowed_origins_only(proxy: Proxy) -> None:
    client = await proxy(cors_origins=PAGE, proxy_api_keys="k-123", rate_limit_rpm=10)
    key = {"Authorization": "Bearer k-123"}
    answer = await client.post("/chatgpt/", json=HELLO, headers={**key, "Origin": PAGE})
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == PAGE
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in answer.headers["Vary"]
    exposed = answer.headers["Access-Control-Expose-Headers"].lower()
    for name in ("x-request-id", "retry-after", "x-ratelimit-remaining-requests", "server-timing"):
        assert name in exposed
    # An error too, so the page can read why.
    denied = await client.post("/chatgpt/", json=HELLO, headers={"Origin": PAGE})
    assert denied.status == 401
    assert denied.headers["Access-Control-Allow-Origin"] == PAGE
    # A stream is prepared by the handler, and carries them as well.
    streamed = await client.post(
        "/chatgpt/", json={**HELLO, "stream": True}, headers={**key, "Origin": PAGE}
    )
    assert streamed.headers["Access-Control-Allow-Origin"] == PAGE
    await streamed.read()

    other = await client.post(
        "/chatgpt/", json=HELLO, headers={**key, "Origin": "https://evil.example.com"}
    )
    assert other.status == 200
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Origin" in other.headers["Vary"]


async def test_any_origin_never_allows_credentials(proxy: Proxy) -> None:
    client = await proxy(cors_origins="*")
    pre = await client.options("/chatgpt/", headers=preflight_headers("https://a.example"))
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in pre.headers
    answer = await client.post("/chatgpt/", json=HELLO, headers={"Origin": "https://b.example"})
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in answer.headers


async def test_without_cors_origins_no_cors_headers(proxy: Proxy) -> None:
    client = await proxy()
    answer = await client.post("/chatgpt/", json=HELLO, headers={"Origin": PAGE})
    assert "Access-Control-Allow-Origin" not in answer.headers
    pre = await client.options("/chatgpt/", headers=preflight_headers())
    assert "Access-Control-Allow-Origin" not in pre.headers


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"trusted_proxies": "gateway.local"}, "chatproxy: TRUSTED_PROXIES: 'gateway.local'"),
        (
            {"rate_limit_rpm": 5, "rate_limit_store": "memcached://cache:11211"},
            "chatproxy: RATE_LIMIT_STORE must be a redis://",
        ),
    ],
    ids=["trusted-proxies", "rate-limit-store"],
)
def test_a_wrong_setting_stops_the_start_with_one_line(
    setting: dict[str, Any], message: str
) -> None:
    """As every configuration error: the operator reads one line, not a traceback."""
    with pytest.raises(SystemExit, match=f"^{re.escape(message)}"):
        create_app(make_settings(**setting))
