"""The README's tables are checked against the code, so they cannot drift from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web

from chatproxy.app import create_app
from chatproxy.config import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `([^`]+)` \| (.*?) \| (.*) \|$")


def _section(heading: str) -> str:
    start = README.index(f"\n## {heading}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _config_rows() -> dict[str, str]:
    rows = {}
    for line in _section("Configuration").splitlines():
        match = ROW.match(line)
        if match:
            rows[match[1]] = match[2].strip()
    return rows


def _default_shown(value: object) -> str:
    """A default as the table writes it: — for none, numbers without a trailing .0."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def test_every_setting_is_in_the_configuration_table_once() -> None:
    rows = _config_rows()
    names = {name.upper() for name in Settings.model_fields}
    assert sorted(names - rows.keys()) == [], "settings missing from the README"
    assert sorted(rows.keys() - names) == [], "README rows that are not settings"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_the_table_shows_each_default_as_settings_has_it(name: str) -> None:
    default = Settings.model_fields[name].default
    assert _config_rows()[name.upper()] == _default_shown(default)


def _routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if path is None or route.method == "HEAD":
            continue
        found.add((route.method, str(path)))
    return found


def test_every_route_has_a_row_in_the_routes_table(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        proxy_api_keys="readme-test-key",
        history_store=f"sqlite:///{tmp_path / 'history.db'}",
    )
    table = _section("Routes")
    missing = []
    for method, path in sorted(_routes(create_app(settings))):
        shown = path if method == "*" else f"{method} {path}"
        # /chatgpt is /chatgpt/ without its slash: one row names both.
        names = {shown, path, f"{path}/", f"{method} {path}/"}
        if not any(f"`{name}`" in table for name in names):
            missing.append(shown)
    assert missing == [], "routes the README's table does not name"
