"""`GET /`: the chat page, and `GET /static/{name}`: its script, styles and icon."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from chatproxy.errors import NotFoundError
from chatproxy.openapi import Body, Operation, register

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PAGE_FILE = "index.html"
# The only files served, with their types: a request's name is looked up here, never joined
# to a path, so nothing outside this list (`../config.py`, a dotfile) can be reached.
ASSET_TYPES = {
    "page.js": "text/javascript",
    "page.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
# The page runs only its own script and styles, and talks only to this server: even text
# that slipped into the DOM as HTML could neither run a script nor load an image elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Revalidated on every load (a 304 when unchanged): the names carry no version, so an
# upgrade must never pair a cached old script with a new page.
CACHE_CONTROL = "no-cache"

Handler = Callable[[web.Request], Awaitable[web.Response]]


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file read once at start-up, with its type and a strong ETag."""

    body: bytes
    content_type: str
    etag: str

    @classmethod
    def read(cls, name: str, content_type: str) -> StaticFile:
        body = (STATIC_DIR / name).read_bytes()
        return cls(body, content_type, hashlib.sha256(body).hexdigest()[:32])

    def response(self, request: web.Request, extra_headers: dict[str, str]) -> web.Response:
        headers = {"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
        headers.update(extra_headers)
        if any(tag.value == self.etag for tag in request.if_none_match or ()):
            response = web.Response(status=304, headers=headers)
        else:
            response = web.Response(body=self.body, headers=headers)
            response.content_type = self.content_type
            if self.content_type.startswith("text/"):
                response.charset = "utf-8"
        response.etag = self.etag
        return response


def page_handler(page: StaticFile) -> Handler:
    async def chat_page(request: web.Request) -> web.Response:
        headers = {
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Referrer-Policy": "no-referrer",
        }
        return page.response(request, headers)

    return chat_page


def asset_handler(assets: dict[str, StaticFile]) -> Handler:
    async def static_file(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        asset = assets.get(name)
        if asset is None:
            raise NotFoundError(f"no static file '{name}'", param="name")
        return asset.response(request, {})

    return static_file


def setup_page_routes(app: web.Application) -> None:
    """The page and its files, read from the package now: serving them touches no disk."""
    page = StaticFile.read(PAGE_FILE, "text/html")
    assets = {name: StaticFile.read(name, kind) for name, kind in ASSET_TYPES.items()}
    app.router.add_get("/", page_handler(page))
    app.router.add_get("/static/{name}", asset_handler(assets))


register(
    Operation(
        "GET",
        "/",
        "The chat page",
        "page",
        description="A single-page chat: provider and model pickers, streamed replies, "
        "the conversation kept on the server when the history layer is on.",
        public=True,
        responses={200: Body(media_type="text/html", schema={"type": "string"})},
    ),
    Operation(
        "GET",
        "/static/{name}",
        "A file of the chat page",
        "page",
        description="The page's script, styles and icon: "
        + ", ".join(ASSET_TYPES)
        + ". Revalidate with If-None-Match.",
        public=True,
        path_params={"name": "one of " + ", ".join(ASSET_TYPES)},
        responses={200: Body(media_type="*/*", schema={"type": "string"})},
    ),
)
