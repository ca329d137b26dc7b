"""The chat page and its files: served with their types, nothing else reachable, every
address in them relative (the app may be mounted under ROOT_PATH)."""

from __future__ import annotations

import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import playwright
import pytest
from yarl import URL

from chatproxy.handlers.page import ASSET_TYPES, STATIC_DIR
from tests.conftest import AiohttpClient, make_settings, serve

ABSOLUTE = re.compile(r"^(?:/|[A-Za-z][A-Za-z0-9+.-]*:)")  # /x, //host, http:, javascript:


class AddressCollector(HTMLParser):
    """Every href, src and action in the page, and the <base> tags (which would move them)."""

    def __init__(self) -> None:
        super().__init__()
        self.addresses: list[str] = []
        self.bases = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.bases += tag == "base"
        for name, value in attrs:
            if name in ("href", "src", "action", "formaction") and value is not None:
                self.addresses.append(value)


def html_addresses() -> AddressCollector:
    collector = AddressCollector()
    collector.feed((STATIC_DIR / "index.html").read_text())
    return collector


async def test_page_is_html_with_a_strict_policy(aiohttp_client: AiohttpClient) -> None:
    client = await serve(aiohttp_client, make_settings())
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.charset == "utf-8"
    assert "<title>chatproxy</title>" in await response.text()
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("page.js", "text/javascript"), ("page.css", "text/css"), ("favicon.svg", "image/svg+xml")],
)
async def test_assets_are_served_with_their_types(
    aiohttp_client: AiohttpClient, name: str, content_type: str
) -> None:
    client = await serve(aiohttp_client, make_settings())
    response = await client.get(f"/static/{name}")
    assert response.status == 200
    assert response.content_type == content_type
    assert await response.read() == (STATIC_DIR / name).read_bytes()
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_an_unchanged_file_is_a_304(aiohttp_client: AiohttpClient) -> None:
    client = await serve(aiohttp_client, make_settings())
    for path in ("/", "/static/page.js"):
        first = await client.get(path)
        etag = first.headers["ETag"]
        again = await client.get(path, headers={"If-None-Match": etag})
        assert again.status == 304
        assert await again.read() == b""
        changed = await client.get(path, headers={"If-None-Match": '"something-else"'})
        assert changed.status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/static/..%2Fhandlers%2Fpage.py",
        "/static/%2E%2E%2Fconfig.py",
        "/static/..%5Cconfig.py",
        "/static/index.html%00.js",
        "/static/.",
        "/static/__init__.py",
        "/static/page.js.bak",
    ],
)
async def test_nothing_but_the_listed_files_is_served(
    aiohttp_client: AiohttpClient, path: str
) -> None:
    client = await serve(aiohttp_client, make_settings())
    response = await client.get(URL(path, encoded=True))
    assert response.status == 404
    body = await response.json()
    assert body["type"] == "not_found"
    assert "import" not in body["error"]


async def test_dot_segments_never_leave_the_static_route(aiohttp_client: AiohttpClient) -> None:
    """`/static/../config.py` as a client may send it, unnormalised, on the wire."""
    client = await serve(aiohttp_client, make_settings())
    response = await client.get(URL("/static/../../chatproxy/config.py", encoded=True))
    assert response.status == 404
    assert "BaseSettings" not in await response.text()


async def test_page_and_files_need_no_key(aiohttp_client: AiohttpClient) -> None:
    client = await serve(aiohttp_client, make_settings(proxy_api_keys="page-test-key-1"))
    for path in ("/", *(f"/static/{name}" for name in ASSET_TYPES)):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/models")).status == 401


def test_every_address_in_the_html_is_relative() -> None:
    collected = html_addresses()
    assert collected.addresses, "the page links its script and styles"
    assert collected.bases == 0
    for address in collected.addresses:
        assert not ABSOLUTE.match(address), address
        assert not address.startswith("static/") or address.removeprefix("static/") in ASSET_TYPES


def test_every_address_in_the_script_and_styles_is_relative() -> None:
    script = re.sub(r"(?m)^\s*//.*$", "", (STATIC_DIR / "page.js").read_text())
    styles = (STATIC_DIR / "page.css").read_text()
    fetched = re.findall(r"\b(?:fetch|request)\(\s*([^,)]+)", script)
    assert any('"models"' in first for first in fetched), fetched
    for first in fetched:
        assert not re.match(r"""^["'`](?:/|[A-Za-z][A-Za-z0-9+.-]*:)""", first), first
    # No string in the script starts a path at the root or names a scheme.
    assert not re.findall(r"""["'`]/[^"'`]""", script)
    assert not re.findall(r"""\b(?:https?|wss?):""", script)
    for address in re.findall(r"url\(\s*['\"]?([^'\")]+)", styles):
        assert not ABSOLUTE.match(address), address
    assert "@import" not in styles


def test_model_output_is_never_parsed_as_html() -> None:
    script = (STATIC_DIR / "page.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


NODE = Path(playwright.__file__).resolve().parent / "driver" / "node"


@pytest.mark.parametrize("hostile", ["*a ", "x _a "], ids=["stars", "underscores"])
def test_inline_marks_take_linear_time_on_a_hostile_reply(hostile: str) -> None:
    """The page re-renders a streaming reply on each frame: a mark that never closes must
    not make each render scan the rest of the text again from every opening (quadratic:
    seconds a frame for a 200 kB reply of `*a *a *a`)."""
    script = (STATIC_DIR / "page.js").read_text()
    inline = re.search(r"const INLINE = (/.+/g);", script)
    assert inline is not None
    program = (
        f"const INLINE = {inline.group(1)};\n"
        f"const text = {json.dumps(hostile)}.repeat(70000);\n"
        "const started = Date.now();\n"
        "INLINE.lastIndex = 0;\n"
        "while (INLINE.exec(text)) {}\n"
        "process.stdout.write(String(Date.now() - started));\n"
    )
    done = subprocess.run(
        [str(NODE), "-e", program], capture_output=True, text=True, timeout=120, check=True
    )
    assert int(done.stdout) < 1000, f"{done.stdout} ms for one render of the reply's text"
    # What the marks are for still works.
    check = f"const INLINE = {inline.group(1)};\n" + (
        "const found = [...'a *it* and **bold** and _un_ `c*d*`'.matchAll(INLINE)]"
        ".map((m) => m[0]);\n"
        "process.stdout.write(JSON.stringify(found));\n"
    )
    done = subprocess.run([str(NODE), "-e", check], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == ["*it*", "**bold**", "_un_", "`c*d*`"]
