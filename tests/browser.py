"""Real programs the tests drive: Debian's chromium through Playwright (the chat page, /docs
and /redoc), and `require` for any such program (nginx for the cluster). Absent, their
tests skip, unless CI is set: there they must run, so they fail (.ci/services installs
them)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = Path("/usr/bin/chromium")


def require(present: bool, message: str) -> None:
    """A real program a test needs: absent, the test skips on a developer's machine and
    fails in CI (CI set), where .ci/services installs it."""
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def chromium() -> Path:
    require(
        CHROMIUM.exists(), f"{CHROMIUM} is absent (apt-get install chromium; .ci/services does)"
    )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium))
        try:
            yield launched
        finally:
            await launched.close()
