"""`/openapi.json`, Swagger UI at `/docs` and ReDoc at `/redoc`, from local files only.

The viewers' assets are the ones the `drf-spectacular-sidecar` package ships, served under
`/docs/` (public, as the pages are). Every URL in the pages is relative, so they work under
a mount prefix (ROOT_PATH) and with no internet.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from chatproxy.errors import NotFoundError
from chatproxy.openapi import Body, Operation, register
from chatproxy.openapi.document import build_document

SIDECAR = "drf_spectacular_sidecar"
SWAGGER_DIR = "static/drf_spectacular_sidecar/swagger-ui-dist"
REDOC_DIR = "static/drf_spectacular_sidecar/redoc/bundles"
# The sidecar's files change only with its version: a day's cache, revalidated by ETag.
ASSET_CACHE = "public, max-age=86400"
PAGE_CACHE = "no-cache"
# The pages may load nothing from elsewhere: a browser enforces "no CDN" for us.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'"
)


@dataclass(frozen=True, slots=True)
class Asset:
    content_type: str
    package_path: str | None = None  # in the sidecar package; None: `text` is the asset
    text: str = ""


SWAGGER_INIT = """\
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
"""
ASSETS = {
    "swagger-ui-bundle.js": Asset("text/javascript", f"{SWAGGER_DIR}/swagger-ui-bundle.js"),
    "swagger-ui.css": Asset("text/css", f"{SWAGGER_DIR}/swagger-ui.css"),
    "favicon-32x32.png": Asset("image/png", f"{SWAGGER_DIR}/favicon-32x32.png"),
    "redoc.standalone.js": Asset("text/javascript", f"{REDOC_DIR}/redoc.standalone.js"),
    "swagger-init.js": Asset("text/javascript", text=SWAGGER_INIT),
}
# Relative to `/docs` and `/redoc`, which sit beside `/openapi.json` and `/docs/`.
SWAGGER_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>chatproxy API</title>
<link rel="icon" type="image/png" href="docs/favicon-32x32.png">
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/swagger-init.js"></script>
</body>
</html>
"""
REDOC_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>chatproxy API</title>
<link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
<redoc spec-url="openapi.json"></redoc>
<script src="docs/redoc.standalone.js"></script>
</body>
</html>
"""


@dataclass(slots=True)
class Loaded:
    body: bytes
    etag: str


class DocsCache:
    """The document and the assets, built or read once per app, on first use."""

    def __init__(self) -> None:
        self.document: bytes | None = None
        self.assets: dict[str, Loaded] = {}


DOCS_CACHE = web.AppKey("docs_cache", DocsCache)


def _load(asset: Asset) -> Loaded:
    if asset.package_path is None:
        body = asset.text.encode()
    else:
        body = resources.files(SIDECAR).joinpath(asset.package_path).read_bytes()
    return Loaded(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


async def openapi_json(request: web.Request) -> web.Response:
    cache = request.app[DOCS_CACHE]
    if cache.document is None:
        cache.document = json.dumps(build_document(request.app), ensure_ascii=False).encode()
    return web.Response(
        body=cache.document,
        content_type="application/json",
        headers={"Cache-Control": PAGE_CACHE},
    )


def _page(html: str) -> web.Response:
    return web.Response(
        text=html,
        content_type="text/html",
        headers={"Cache-Control": PAGE_CACHE, "Content-Security-Policy": PAGE_POLICY},
    )


async def swagger_ui(request: web.Request) -> web.Response:
    return _page(SWAGGER_PAGE)


async def redoc(request: web.Request) -> web.Response:
    return _page(REDOC_PAGE)


async def asset(request: web.Request) -> web.Response:
    """One of a fixed set of files by name: nothing of the request reaches a file path."""
    name = request.match_info["asset"]
    spec = ASSETS.get(name)
    if spec is None:
        raise NotFoundError(f"no such documentation asset: {name!r}")
    cache = request.app[DOCS_CACHE]
    loaded = cache.assets.get(name)
    if loaded is None:
        loaded = cache.assets[name] = _load(spec)
    text = spec.content_type.startswith("text/")
    headers = {"Cache-Control": ASSET_CACHE, "ETag": loaded.etag}
    if text:  # sent gzipped or not by Accept-Encoding: a shared cache must key on it
        headers["Vary"] = "Accept-Encoding"
    if loaded.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    response = web.Response(
        body=loaded.body,
        content_type=spec.content_type,
        charset="utf-8" if text else None,
        headers=headers,
    )
    if text:  # PNG is compressed already
        response.enable_compression()
    return response


def setup_docs_routes(app: web.Application) -> None:
    app[DOCS_CACHE] = DocsCache()
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", swagger_ui)
    app.router.add_get("/redoc", redoc)
    app.router.add_get("/docs/{asset}", asset)


_HTML = Body(media_type="text/html", schema={"type": "string"}, description="An HTML page")
register(
    Operation(
        "GET",
        "/openapi.json",
        "This OpenAPI 3.1 document",
        "docs",
        responses={200: Body(schema={"type": "object"}, description="The document")},
        public=True,
    ),
    Operation("GET", "/docs", "Swagger UI", "docs", responses={200: _HTML}, public=True),
    Operation("GET", "/redoc", "ReDoc", "docs", responses={200: _HTML}, public=True),
    Operation(
        "GET",
        "/docs/{asset}",
        "A file of the documentation viewers",
        "docs",
        path_params={"asset": "One of: " + ", ".join(ASSETS)},
        responses={
            200: Body(
                media_type="*/*",
                schema={"type": "string", "format": "binary"},
                description="The file, with its content type",
            ),
            304: Body(media_type="", description="Not Modified (the ETag matched)"),
        },
        public=True,
    ),
)
