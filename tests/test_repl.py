"""`chatproxy chat` as a user runs it: a subprocess typing into a live server."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import Client, Proxy
from tests.fakes.openai_server import FakeOpenAI, stream

ROOT = Path(__file__).resolve().parent.parent


async def chat(client: Client, typed: str, *options: str) -> tuple[int, str]:
    """Run `chatproxy chat` against `client`'s server, type `typed`, return code and output."""
    url = str(client.make_url("/")).rstrip("/")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatproxy",
        "chat",
        "--url",
        url,
        *options,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    out, _ = await asyncio.wait_for(process.communicate(typed.encode()), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_chat_keeps_the_conversation_and_streams(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = stream(["Hel", "lo!"])
    client = await proxy(proxy_api_keys="repl-key")
    code, text = await chat(
        client, "Привет\nИ ещё\n/models\n/reset\nснова\n/quit\n", "--api-key", "repl-key"
    )
    assert code == 0, text
    assert text.count("Hello!") == 3
    assert '"gpt-4o-mini"' in text, "/models printed the provider's list"
    second = fake_openai.requests[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == "Hello!" and second[3]["content"] == "И ещё"
    after_reset = fake_openai.requests[2]["messages"]
    assert [m["role"] for m in after_reset] == ["system", "user"]


async def test_chat_reports_errors_without_crashing(proxy: Proxy) -> None:
    client = await proxy(proxy_api_keys="repl-key")
    code, text = await chat(client, "hi\n", "--provider", "gigachat")
    assert code == 0
    assert "[401]" in text and "Traceback" not in text
