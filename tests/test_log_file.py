"""LOG_FILE: the console's lines in a file, rotated by size or reopened after logrotate
moved it, scrubbed the same way; prompts and replies stay out of it below DEBUG."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from chatproxy.logs import AccessLog, add_log_file, request_id_var, setup_logging
from chatproxy.redact import Redactor
from tests.conftest import AiohttpServer, Proxy
from tests.fakes.openai_server import FakeOpenAI, reply
from tests.test_server_process import free_port, start_server, stop_after, wait_ready

__all__ = ["stop_after"]  # a fixture, used by the process test below

SECRET = "file-log-secret-0123456789"
log = logging.getLogger("chatproxy.logfiletest")


@pytest.fixture
def handlers() -> Iterator[list[logging.Handler]]:
    """The file handlers a test adds, taken off the root logger after it."""
    added: list[logging.Handler] = []
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    yield added
    for handler in added:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def test_rotates_by_size_keeping_the_backups(
    tmp_path: Path, handlers: list[logging.Handler]
) -> None:
    path = tmp_path / "chatproxy.log"
    handlers.append(
        add_log_file(path, max_bytes=400, backups=2, fmt="text", redactor=Redactor([SECRET]))
    )
    token = request_id_var.set("rid-0001")
    try:
        for number in range(40):
            log.info("line %02d with key %s", number, SECRET)
    finally:
        request_id_var.reset(token)
    assert (tmp_path / "chatproxy.log.1").exists() and (tmp_path / "chatproxy.log.2").exists()
    assert not (tmp_path / "chatproxy.log.3").exists()
    assert path.stat().st_size <= 400
    last = path.read_text().splitlines()[-1]
    assert last.endswith("INFO chatproxy.logfiletest [rid-0001] line 39 with key ***")
    every = "".join(p.read_text() for p in tmp_path.iterdir())
    assert SECRET not in every


def test_reopens_after_logrotate_moved_it(tmp_path: Path, handlers: list[logging.Handler]) -> None:
    path = tmp_path / "chatproxy.log"
    handlers.append(add_log_file(path, max_bytes=0, backups=5, fmt="json", redactor=Redactor()))
    log.info("before rotation")
    path.rename(tmp_path / "chatproxy.log.1")  # what logrotate does (without copytruncate)
    log.warning("after rotation, Authorization: Bearer sk-abc-0123456789")
    moved = [json.loads(line) for line in (tmp_path / "chatproxy.log.1").read_text().splitlines()]
    fresh = [json.loads(line) for line in path.read_text().splitlines()]
    assert [entry["message"] for entry in moved] == ["before rotation"]
    assert fresh[0]["level"] == "WARNING"
    assert fresh[0]["message"] == "after rotation, Authorization: Bearer ***"
    assert set(fresh[0]) >= {"ts", "logger", "request_id"}


async def test_prompts_and_replies_stay_below_info(
    proxy: Proxy, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_openai.default = reply("the-reply-text-4242")
    client = await proxy()
    prompt = {"messages": [{"role": "user", "content": "the-prompt-text-4242"}]}
    assert (await client.post("/chatgpt/", json=prompt)).status == 200
    streamed = await client.post("/chatgpt/", json={**prompt, "stream": True})
    await streamed.read()
    v1 = {"model": "chatgpt/gpt-4o-mini", **prompt}
    assert (await client.post("/v1/chat/completions", json=v1)).status == 200
    for record in caplog.records:
        if record.levelno >= logging.INFO:
            text = record.getMessage()
            assert "the-prompt-text-4242" not in text and "the-reply-text-4242" not in text


async def test_the_server_writes_its_log_file(
    tmp_path: Path, aiohttp_server: AiohttpServer, stop_after: list[subprocess.Popen[bytes]]
) -> None:
    upstream = await aiohttp_server(FakeOpenAI().app())
    path = tmp_path / "chatproxy.log"
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"OPENAI_API_KEY=sk-test-key-123456\nOPENAI_BASE_URL={upstream.make_url('/v1')}\n"
        f"LOG_FILE={path}\nPROXY_API_KEYS=client-key-987654\n"
    )
    port = free_port()
    proc = start_server(port, env_file)
    stop_after.append(proc)
    await wait_ready(port)
    async with aiohttp.ClientSession() as session:
        hello = {"messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": "Bearer client-key-987654"}
        async with session.post(f"http://127.0.0.1:{port}/chatgpt/", json=hello, headers=headers):
            pass
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.get_running_loop().run_in_executor(None, proc.wait, 10) == 0
    written = path.read_text()
    assert "listening on" in written
    assert "INFO chatproxy.access [" in written and "POST /chatgpt/ 200" in written
    assert "sk-test-key-123456" not in written and "client-key-987654" not in written


@pytest.mark.parametrize("through_records", [False, True])
def test_a_request_path_cannot_forge_a_log_line(
    through_records: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The path is the client's (`%0A` decodes to a newline): in the text format, in the
    console and LOG_FILE alike, it must not start a line of its own."""
    stream = io.StringIO()
    root = logging.getLogger()
    handler = setup_logging("INFO", "text", Redactor([]), stream)
    access = AccessLog(logging.getLogger("chatproxy.access"))
    try:
        if through_records:  # an operator's handler beside ours: ordinary records
            caplog.set_level(logging.INFO, "chatproxy.access")
        access("GET", "/x\n2026-11-23 09:00:00,000 INFO chatproxy.auth [-] admin\x1b[2K", 404, 1.0)
    finally:
        root.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "GET /x\\n2026-11-23" in lines[0] and "\\x1b[2K 404" in lines[0]
