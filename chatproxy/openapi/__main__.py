"""`python -m chatproxy.openapi [--check]`: print the document of an app with every
optional route on (keys, the history layer), or with `--check` the routes missing from the
table and the entries naming no route (exit status 1 when there are any)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from chatproxy.app import create_app
from chatproxy.config import Settings
from chatproxy.openapi.document import build_document
from chatproxy.openapi.registry import REGISTRY
from chatproxy.openapi.routes import nonexistent, undocumented


def full_app(folder: Path) -> web.Application:
    """Every optional route registered: keys on and a history store named (never opened:
    the app is not started)."""
    settings = Settings(
        _env_file=None,
        proxy_api_keys="openapi-document-key",
        history_store=f"sqlite:///{folder / 'history.db'}",
    )
    return create_app(settings)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as folder:
        app = full_app(Path(folder))
        if "--check" not in argv:
            print(json.dumps(build_document(app), indent=2, ensure_ascii=False))
            return 0
        missing, stale = undocumented(app, REGISTRY), nonexistent(app, REGISTRY)
    for method, path in missing:
        print(f"no operation for the route {method} {path}")
    for method, path in stale:
        print(f"an operation for {method} {path}, which no route serves")
    return 1 if missing or stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
