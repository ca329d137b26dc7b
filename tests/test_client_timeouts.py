"""Slow and malformed clients, over raw sockets: time limits, the connection cap, JSON 400s."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from chatproxy.app import create_app
from chatproxy.config import Settings
from chatproxy.server import LINGERING_TIME, SPARE_FDS, ChatRunner, raise_fd_limit
from tests.conftest import make_settings, openai_settings
from tests.fakes.openai_server import FakeOpenAI
from tests.test_server_process import free_port, start_server, wait_ready

SLACK = 1.0
HEAD = b"POST /chatgpt/ HTTP/1.1\r\nHost: chatproxy\r\nContent-Type: application/json\r\n"
BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()

Start = Callable[..., Awaitable[int]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """`port = await start(settings)`: the app served as `python -m chatproxy` serves it
    (chatproxy.server's runner), in this process."""
    runners: list[ChatRunner] = []

    async def serve(settings: Settings) -> int:
        runner = ChatRunner(create_app(settings), settings)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return site.port

    yield serve
    for runner in runners:
        await runner.cleanup()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_after(reader: asyncio.StreamReader, limit: float) -> tuple[bytes, float]:
    """Everything the server sent until it closed the connection, and when it closed."""
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), limit)
    return data, time.monotonic() - started


def json_body(answer: bytes) -> Any:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


counts_fds = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc/<pid>/fd")


@counts_fds
async def test_a_hundred_slow_bodies_get_408_and_their_descriptors_back(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CLIENT_BODY_TIMEOUT=1\nLOG_LEVEL=WARNING\n")
    port = free_port()
    proc = start_server(port, env_file)
    try:
        await wait_ready(port)
        await asyncio.sleep(0.2)  # the readiness probe's connection closes
        before = open_fds(proc.pid)
        sockets = [await connect(port) for _ in range(100)]
        for _, writer in sockets:
            writer.write(HEAD + b"Content-Length: 100\r\n\r\n" + b'{"messages":')
        answers = await asyncio.gather(
            *(closed_after(reader, 1 + LINGERING_TIME + SLACK) for reader, _ in sockets)
        )
        for answer, _ in answers:
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert json_body(answer)["type"] == "request_timeout"
        for _, writer in sockets:
            writer.close()
        await asyncio.sleep(0.2)
        assert open_fds(proc.pid) == before
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


async def test_a_body_in_pieces_within_the_timeout_is_served(
    start: Start, fake_openai: FakeOpenAI
) -> None:
    port = await start(openai_settings(fake_openai, client_body_timeout=2))
    reader, writer = await connect(port)
    writer.write(HEAD + f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n".encode())
    writer.write(BODY[:5])
    await asyncio.sleep(0.3)
    writer.write(BODY[5:])
    answer, _ = await closed_after(reader, 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert json_body(answer)["messages"][-1]["content"] == "Hello!"


@pytest.mark.parametrize("head", [b"", b"GET /health HTTP/1.1\r\nHost: chatproxy\r\n"])
async def test_a_connection_without_a_whole_head_closes_after_the_header_timeout(
    start: Start, head: bytes
) -> None:
    port = await start(make_settings(client_header_timeout=1, client_keepalive_timeout=30))
    reader, writer = await connect(port)
    writer.write(head)
    answer, waited = await closed_after(reader, 1 + SLACK)
    writer.close()
    assert answer == b"" and waited >= 0.9


async def test_an_idle_kept_alive_connection_closes_after_the_keepalive_timeout(
    start: Start,
) -> None:
    port = await start(make_settings(client_header_timeout=0.5, client_keepalive_timeout=1.5))
    reader, writer = await connect(port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: chatproxy\r\n\r\n")
    answer, waited = await closed_after(reader, 1.5 + SLACK)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert waited >= 1.4, "the header timeout is for a new connection's first head only"


@counts_fds
async def test_connections_past_max_connections_are_closed_at_once(start: Start) -> None:
    port = await start(make_settings(max_connections=5))
    await asyncio.sleep(0)
    before = open_fds(os.getpid())
    held = [await connect(port) for _ in range(5)]
    reader, writer = await connect(port)
    answer, waited = await closed_after(reader, 1)
    writer.close()
    assert answer == b"" and waited < 0.5
    held[0][1].close()
    await asyncio.sleep(0.1)
    reader, writer = await connect(port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: chatproxy\r\nConnection: close\r\n\r\n")
    answer, _ = await closed_after(reader, 2)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), "a freed place is served again"
    for _, other in held[1:]:
        other.close()
    await asyncio.sleep(0.1)
    assert open_fds(os.getpid()) == before


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"GET /health HTTP/1.1\r\nHost: chatproxy\r\nX-Bad: a\rb\r\n\r\n", "LF"),
        (b"GET /health HTTP/1.1\r\nHost: chatproxy\nX-Bad: b\r\n\r\n", "CR"),
        (b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", "8190 bytes"),
    ],
    ids=["bare-cr", "bare-lf", "header-over-8k"],
)
async def test_requests_the_parser_refuses_get_a_json_400(
    start: Start, request_bytes: bytes, reason: str
) -> None:
    port = await start(make_settings())
    reader, writer = await connect(port)
    writer.write(request_bytes)
    answer, _ = await closed_after(reader, 2)
    writer.close()
    head = answer.partition(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.0 400 ") and "Content-Type: application/json" in head
    body = json_body(answer)
    assert body["type"] == "invalid_request_error"
    assert body["error"].startswith("malformed HTTP request: ") and reason in body["error"]
    assert "aaaa" not in body["error"], "the request's own bytes are not echoed"


def test_the_descriptor_limit_is_lifted_for_max_connections() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        raise_fd_limit(2000)
        wanted = 2000 + SPARE_FDS
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == (
            wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        )
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
