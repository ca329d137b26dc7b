"""The real process: the CLI, start-up time, and SIGTERM draining in-flight requests."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import AiohttpServer
from tests.fakes.openai_server import FakeOpenAI, hang

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int, env_file: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatproxy",
            "--port",
            str(port),
            "--env-file",
            str(env_file),
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def wait_ready(port: int, deadline: float = 10.0) -> float:
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.02)
    raise AssertionError("server did not start")


@pytest.fixture
def stop_after() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_help_lists_the_options() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "chatproxy", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    for option in ("--host", "--port", "--env-file", "--local-model", "--device"):
        assert option in out


def test_missing_env_file_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatproxy", "--env-file", str(tmp_path / "nope.env")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert "does not exist" in result.stderr


def test_invalid_configuration_is_a_clear_error(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("UPSTREAM_RETRIES=many\n")
    result = subprocess.run(
        [sys.executable, "-m", "chatproxy", "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert "upstream_retries" in result.stderr and "Traceback" not in result.stderr


async def test_sigterm_drains_in_flight_requests(
    tmp_path: Path, aiohttp_server: AiohttpServer, stop_after: list[subprocess.Popen[bytes]]
) -> None:
    fake = FakeOpenAI(default=hang(1.0))
    upstream = await aiohttp_server(fake.app())
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"OPENAI_API_KEY=sk-test-key-123456\nOPENAI_BASE_URL={upstream.make_url('/v1')}\n"
    )
    port = free_port()
    proc = start_server(port, env_file)
    stop_after.append(proc)
    startup = await wait_ready(port)
    assert startup < 5.0
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}"
        pending = asyncio.ensure_future(
            session.post(f"{url}/chatgpt/", json={"messages": [{"role": "user", "content": "hi"}]})
        )
        await asyncio.wait_for(fake.received.wait(), 5)
        proc.send_signal(signal.SIGTERM)
        resp = await pending
        assert resp.status == 200, "the request in flight at SIGTERM still gets its answer"
        assert (await resp.json())["messages"][-1]["content"] == "too late"
    exit_code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 10)
    assert exit_code == 0
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    assert "sk-test-key-123456" not in output
    assert "listening on" in output
    # The access line, written by AccessLog's direct path (no other handler in a real process).
    access = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO chatproxy\.access \[[0-9a-f]{32}\] "
    assert re.search(access + r"POST /chatgpt/ 200 \d+\.\dms$", output, re.M), output


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "chatproxy"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "--local-model" in out.stdout


async def test_settle_gc_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    from chatproxy.__main__ import GC_YOUNG_THRESHOLD, settle_gc

    threshold = gc.get_threshold()
    try:
        await settle_gc(object())
        assert gc.get_freeze_count() > 1000, "modules and settings are out of the collector's way"
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
