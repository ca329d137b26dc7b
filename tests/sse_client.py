"""Reading a chatproxy SSE answer in tests."""

from __future__ import annotations

import json
from typing import Any

import aiohttp


async def read_events(resp: aiohttp.ClientResponse) -> list[tuple[str, Any]]:
    """(event, parsed data) pairs; `[DONE]` comes back as ("message", "[DONE]")."""
    text = await resp.text()
    events: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):  # not splitlines(): JSON may hold U+2028 unescaped
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        raw = "\n".join(data)
        events.append((name, raw if raw == "[DONE]" else json.loads(raw)))
    return events
