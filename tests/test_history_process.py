"""A real chatproxy process killed with SIGKILL right after acknowledging a reply loses
nothing of it: what it answered 200 for is in the store when a new process starts."""

from __future__ import annotations

import signal
import subprocess
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import AiohttpServer
from tests.fakes.openai_server import FakeOpenAI
from tests.history_stores import app_postgres, store_url
from tests.test_server_process import free_port, start_server, stop_after, wait_ready

__all__ = ["app_postgres", "stop_after"]  # fixtures, used by name


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_sigkill_after_an_acknowledged_reply_loses_nothing(
    aiohttp_server: AiohttpServer,
    tmp_path: Path,
    stop_after: list[subprocess.Popen[bytes]],
    kind: str,
    app_postgres: str,
) -> None:
    fake = FakeOpenAI()
    upstream = await aiohttp_server(fake.app())
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"OPENAI_API_KEY=sk-test\nOPENAI_BASE_URL={upstream.make_url('/v1')}\n"
        f"HISTORY_STORE={store_url(kind, tmp_path, app_postgres)}\nLOG_LEVEL=WARNING\n"
    )
    cid = f"kill-{uuid.uuid4().hex}"
    port = free_port()
    first = start_server(port, env_file)
    stop_after.append(first)
    await wait_ready(port)
    async with aiohttp.ClientSession() as session:
        for n in range(3):
            body = {"messages": [{"role": "user", "content": f"q{n}"}], "conversation_id": cid}
            async with session.post(f"http://127.0.0.1:{port}/chatgpt/", json=body) as resp:
                assert resp.status == 200
        first.send_signal(signal.SIGKILL)  # no shutdown, no flush: only what was committed
        first.wait()

        second = start_server(port, env_file)
        stop_after.append(second)
        await wait_ready(port)
        async with session.get(f"http://127.0.0.1:{port}/history/{cid}") as resp:
            stored = await resp.json()
    assert [m["content"] for m in stored["messages"][::2]] == ["q0", "q1", "q2"]
    assert len(stored["messages"]) == 6
