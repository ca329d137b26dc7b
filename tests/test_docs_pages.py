"""`/docs` (Swagger UI) and `/redoc` from the files a Python package ships: no CDN, only
relative URLs (they work under a mount prefix), cached assets, no path traversal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Route
from yarl import URL

from chatproxy.app import create_app
from chatproxy.handlers.docs import ASSETS
from tests.conftest import AiohttpClient, AiohttpServer, Client, make_settings, serve

KEY = "docs-test-key-0123456789"
PAGES = ["/docs", "/redoc"]
_REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']""")
_INIT_URL = re.compile(r"""url:\s*["']([^"']+)["']""")


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    """Keys on: the documentation must still answer without one."""
    return await serve(aiohttp_client, make_settings(proxy_api_keys=KEY))


def references(html: str) -> list[str]:
    return _REFERENCE.findall(html)


@pytest.mark.parametrize("page", PAGES)
async def test_the_page_loads_only_relative_local_urls(client: Client, page: str) -> None:
    resp = await client.get(page)
    assert resp.status == 200
    assert resp.content_type == "text/html"
    html = await resp.text()
    assert "http://" not in html and "https://" not in html and "//" not in html
    urls = references(html)
    assert urls, "the page references its assets"
    for url in urls:
        assert not url.startswith("/"), url  # relative: the app may live under a prefix
    # The browser may fetch nothing from elsewhere, whatever a bundle tries.
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]


@pytest.mark.parametrize("page", PAGES)
async def test_every_asset_a_page_names_is_served(client: Client, page: str) -> None:
    html = await (await client.get(page)).text()
    base = URL(page)
    for reference in references(html):
        resp = await client.get(str(base.join(URL(reference))))
        assert resp.status == 200, reference
        body = await resp.read()
        assert body, reference
        if reference.endswith(".js"):
            assert resp.content_type == "text/javascript"
        elif reference.endswith(".css"):
            assert resp.content_type == "text/css"
        elif reference.endswith(".png"):
            assert resp.content_type == "image/png"
        elif reference == "openapi.json":
            assert resp.content_type == "application/json"


async def test_swagger_loads_the_document_relatively(client: Client) -> None:
    init = await (await client.get("/docs/swagger-init.js")).text()
    assert _INIT_URL.findall(init) == ["openapi.json"]
    assert "validatorUrl: null" in init  # Swagger UI would call its online validator


async def test_assets_are_cached_and_revalidated(client: Client) -> None:
    resp = await client.get("/docs/swagger-ui-bundle.js")
    assert resp.status == 200
    assert "max-age=" in resp.headers["Cache-Control"]
    etag = resp.headers["ETag"]
    again = await client.get("/docs/swagger-ui-bundle.js", headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    changed = await client.get("/docs/swagger-ui-bundle.js", headers={"If-None-Match": '"x"'})
    assert changed.status == 200


async def test_large_assets_are_compressed_for_clients_that_accept_it(client: Client) -> None:
    resp = await client.get(
        "/docs/redoc.standalone.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert resp.headers.get("Content-Encoding") == "gzip"


@pytest.mark.parametrize(
    "path",
    [
        "/docs/..%2F..%2Fpyproject.toml",
        "/docs/%2e%2e%2fapp.py",
        "/docs/LICENSE",
        "/docs/swagger-ui-bundle.js.map",
        "/docs/..%5c__init__.py",
        "/docs/nope.js",
    ],
)
async def test_only_the_known_assets_are_served(client: Client, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404
    body = await resp.json()
    assert body["type"] == "not_found"


async def test_the_pages_work_under_a_mount_prefix(aiohttp_client: AiohttpClient) -> None:
    outer = web.Application()
    outer.add_subapp("/prefix", create_app(make_settings()))
    client = await aiohttp_client(outer)
    for page in ("/prefix/docs", "/prefix/redoc"):
        html = await (await client.get(page)).text()
        for reference in references(html):
            url = URL(page).join(URL(reference))
            assert str(url).startswith("/prefix/"), url
            assert (await client.get(str(url))).status == 200, url


def test_every_asset_exists_in_the_installed_package() -> None:
    from chatproxy.handlers.docs import _load

    for name, spec in ASSETS.items():
        assert _load(spec).body, name


async def test_swagger_ui_and_redoc_render_in_a_real_browser_offline(
    aiohttp_server: AiohttpServer, browser: Browser, tmp_path: Path
) -> None:
    server = await aiohttp_server(create_app(make_settings(proxy_api_keys=KEY)))
    origin = str(server.make_url("")).rstrip("/")
    elsewhere: list[str] = []

    async def only_the_test_server(route: Route) -> None:
        if route.request.url.startswith(origin + "/"):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    page = await browser.new_page()
    await page.route("**/*", only_the_test_server)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # A Content-Security-Policy refusal shows as a console error.
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(f"{origin}/docs")
    await page.wait_for_selector(".opblock", timeout=30_000)
    paths = await page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/v1/chat/completions" in p for p in paths), paths
    assert any("/history/" in p for p in paths), paths
    await page.screenshot(path=str(tmp_path / "swagger.png"))
    await page.goto(f"{origin}/redoc")
    heading = page.locator("h2", has_text="Chat completion (OpenAI-compatible)")
    await heading.wait_for(timeout=30_000)
    await page.screenshot(path=str(tmp_path / "redoc.png"))
    # ReDoc's footer names an image on its CDN; the page's policy refuses it (the
    # browser sends nothing) and ReDoc hides the image. Nothing else may fail.
    refused = [e for e in errors if "violates the following Content Security" in e]
    assert all("cdn.redoc.ly" in e for e in refused), refused
    assert [e for e in errors if e not in refused] == []
    assert elsewhere == []


async def test_the_pages_work_under_root_path(aiohttp_client: AiohttpClient) -> None:
    client = await serve(aiohttp_client, make_settings(root_path="/prefix", proxy_api_keys=KEY))
    for page in ("/prefix/docs", "/prefix/redoc"):
        resp = await client.get(page)
        assert resp.status == 200, page
        for reference in references(await resp.text()):
            url = URL(page).join(URL(reference))
            assert str(url).startswith("/prefix/"), url
            assert (await client.get(str(url))).status == 200, url


@pytest.mark.parametrize("encoding", ["gzip", "identity"])
async def test_compressed_assets_tell_shared_caches_they_vary_by_encoding(
    client: Client, encoding: str
) -> None:
    """`Cache-Control: public` lets a gateway's cache keep the answer: without `Vary`, it
    would hand the gzip bytes it kept to a client that cannot read them."""
    headers = {"Accept-Encoding": encoding}
    resp = await client.get("/docs/swagger-ui.css", headers=headers, auto_decompress=False)
    assert resp.status == 200
    assert "accept-encoding" in resp.headers.get("Vary", "").lower()
    headers["If-None-Match"] = resp.headers["ETag"]
    again = await client.get("/docs/swagger-ui.css", headers=headers)
    assert again.status == 304
    assert "accept-encoding" in again.headers.get("Vary", "").lower()
