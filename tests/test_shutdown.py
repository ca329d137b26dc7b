"""SIGTERM and SIGINT on the real process: the drain the README promises, timed."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.openai_server import Behaviour, FakeOpenAI, chunk, hang, stream
from tests.test_server_process import free_port, start_server, stop_after, wait_ready

__all__ = ["stop_after"]  # a fixture, used by name

USER = {"role": "user", "content": "hi"}
# SIGTERM to exit may take SHUTDOWN_TIMEOUT and this much more (the README's promise is ~1 s).
EXIT_SLACK = 1.0


def endless(gap: float = 0.05) -> Behaviour:
    """An upstream stream that never ends: one chunk every `gap` seconds."""

    async def behave(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        while True:
            await resp.write(f"data: {chunk('tick ')}\n\n".encode())
            await asyncio.sleep(gap)

    return behave


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str

    def signal(self, signum: int = signal.SIGTERM) -> float:
        self.proc.send_signal(signum)
        return time.monotonic()

    async def exit_after(self, sent: float) -> float:
        """Seconds from `sent` until the process exited (0 is asserted)."""
        code = await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 15)
        assert code == 0, self.output()
        return time.monotonic() - sent

    def output(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.read().decode() if self.proc.poll() is not None else ""


Launch = Callable[..., Awaitable[Served]]


@pytest.fixture
def launch(
    tmp_path: Path, fake_openai: FakeOpenAI, stop_after: list[subprocess.Popen[bytes]]
) -> Launch:
    """`await launch(SHUTDOWN_TIMEOUT="2")`: chatproxy in its own process, on the fake;
    `stop_after` ends each at the test's end."""
    procs = stop_after

    async def start(**env: str) -> Served:
        lines = [f"OPENAI_API_KEY=sk-test-key-123456\nOPENAI_BASE_URL={fake_openai.base_url}"]
        lines += [f"{name}={value}" for name, value in env.items()]
        env_file = tmp_path / f"{len(procs)}.env"
        env_file.write_text("\n".join(lines) + "\n")
        port = free_port()
        proc = start_server(port, env_file)
        procs.append(proc)
        await wait_ready(port)
        return Served(proc, f"http://127.0.0.1:{port}")

    return start


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def parse_events(text: str) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    for block in filter(str.strip, text.split("\n\n")):
        name, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        events.append((name, data if data == "[DONE]" else json.loads(data)))
    return events


class OpenStream:
    """A streaming chat request being read as it arrives."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.text = ""
        self.first = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> list[tuple[str, Any]]:
        async for line in self.resp.content:
            self.text += line.decode()
            self.first.set()
        return parse_events(self.text)

    async def events(self) -> list[tuple[str, Any]]:
        return await asyncio.wait_for(self.reader, 10)


async def open_stream(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> OpenStream:
    resp = await session.post(url, json=body)
    assert resp.status == 200
    opened = OpenStream(resp)
    await asyncio.wait_for(opened.first.wait(), 5)
    return opened


async def test_sigterm_drains_then_ends_an_open_stream_with_an_error_event(
    launch: Launch, fake_openai: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake_openai.default = endless()
    served = await launch(SHUTDOWN_TIMEOUT="2")
    # A keep-alive connection, opened before the signal, as a gateway's health checker has.
    keep_alive = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=keep_alive) as checker:
        async with checker.get(f"{served.url}/ready") as resp:
            assert resp.status == 200
        opened = await open_stream(
            session, f"{served.url}/chatgpt/", {"messages": [USER], "stream": True}
        )
        sent = served.signal()
        await asyncio.sleep(0.2)
        async with checker.get(f"{served.url}/ready") as resp:
            assert resp.status == 503, "readiness turns 503 at once, on kept-alive connections"
            assert (await resp.json())["providers"]["server"] == "shutting down"
        async with aiohttp.ClientSession() as fresh:
            async with fresh.get(f"{served.url}/ready") as resp:
                assert resp.status == 503, "the listener stays open during the drain"
            async with fresh.post(f"{served.url}/chatgpt/", json={"messages": [USER]}) as resp:
                assert resp.status == 503
                assert "shutting down" in (await resp.json())["error"]
            async with fresh.get(f"{served.url}/health") as resp:
                assert resp.status == 200
        streamed_before = opened.text.count("event: delta")
        events = await opened.events()
        ended = time.monotonic() - sent
    exited = await served.exit_after(sent)
    assert events[-1] == (
        "error",
        {"error": "chatproxy is shutting down", "type": "service_unavailable"},
    )
    assert sum(name == "delta" for name, _ in events) > streamed_before, "it ran on meanwhile"
    assert 2.0 <= ended < 2.0 + EXIT_SLACK, "the stream got SHUTDOWN_TIMEOUT, then no more"
    assert exited < 2.0 + EXIT_SLACK
    for _ in range(50):  # the fake notices at its next write
        if fake_openai.disconnects:
            break
        await asyncio.sleep(0.02)
    assert fake_openai.disconnects == 1, "the upstream stream was closed"
    assert "shutdown deadline: ending 1 request(s) in flight" in served.output()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_timeout_zero_ends_a_v1_stream_at_once(
    launch: Launch, fake_openai: FakeOpenAI, session: aiohttp.ClientSession, signum: int
) -> None:
    fake_openai.default = endless()
    served = await launch(SHUTDOWN_TIMEOUT="0")
    body = {"model": "gpt-4o", "messages": [USER], "stream": True}
    opened = await open_stream(session, f"{served.url}/v1/chat/completions", body)
    sent = served.signal(signum)
    events = await opened.events()
    ended = time.monotonic() - sent
    exited = await served.exit_after(sent)
    assert events[-1] == ("message", "[DONE]")
    error = events[-2][1]["error"]
    assert error["type"] == "service_unavailable" and "shutting down" in error["message"]
    assert ended < EXIT_SLACK and exited < EXIT_SLACK


async def test_a_stream_that_ends_during_the_drain_is_whole_and_the_exit_is_early(
    launch: Launch, fake_openai: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake_openai.default = stream(["a"] * 10, pause=0.1)
    served = await launch(SHUTDOWN_TIMEOUT="30")
    opened = await open_stream(
        session, f"{served.url}/chatgpt/", {"messages": [USER], "stream": True}
    )
    sent = served.signal()
    events = await opened.events()
    exited = await served.exit_after(sent)
    assert events[-1][0] == "done"
    assert events[-1][1]["messages"][-1]["content"] == "a" * 10
    assert exited < 1.0 + EXIT_SLACK, "no waiting once nothing is in flight"


async def test_a_stream_without_its_first_byte_at_the_deadline_is_a_503(
    launch: Launch, fake_openai: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake_openai.default = hang()
    served = await launch(SHUTDOWN_TIMEOUT="0.5")
    pending = asyncio.ensure_future(
        session.post(f"{served.url}/chatgpt/", json={"messages": [USER], "stream": True})
    )
    await asyncio.wait_for(fake_openai.received.wait(), 5)
    sent = served.signal()
    resp = await asyncio.wait_for(pending, 5)
    assert resp.status == 503
    assert await resp.json() == {
        "error": "chatproxy is shutting down",
        "type": "service_unavailable",
        "request_id": resp.headers["X-Request-ID"],
    }
    assert await served.exit_after(sent) < 0.5 + EXIT_SLACK


@pytest.mark.parametrize("path", ["/chatgpt/", "/v1/chat/completions"])
async def test_a_plain_request_still_waiting_at_the_deadline_is_a_503(
    launch: Launch, fake_openai: FakeOpenAI, session: aiohttp.ClientSession, path: str
) -> None:
    fake_openai.default = hang()
    served = await launch(SHUTDOWN_TIMEOUT="0.5")
    body = {"model": "gpt-4o", "messages": [USER]}
    pending = asyncio.ensure_future(session.post(f"{served.url}{path}", json=body))
    await asyncio.wait_for(fake_openai.received.wait(), 5)
    sent = served.signal()
    resp = await asyncio.wait_for(pending, 5)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert "shutting down" in await resp.text()
    assert await served.exit_after(sent) < 0.5 + EXIT_SLACK


async def test_an_idle_server_exits_at_once(launch: Launch) -> None:
    served = await launch(SHUTDOWN_TIMEOUT="30")
    async with aiohttp.ClientSession() as idle:  # a kept-alive connection does not hold it
        async with idle.get(f"{served.url}/health") as resp:
            assert resp.status == 200
        sent = served.signal()
        assert await served.exit_after(sent) < EXIT_SLACK


async def test_a_second_signal_ends_the_drain(
    launch: Launch, fake_openai: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake_openai.default = endless()
    served = await launch(SHUTDOWN_TIMEOUT="30")
    opened = await open_stream(
        session, f"{served.url}/chatgpt/", {"messages": [USER], "stream": True}
    )
    sent = served.signal()
    await asyncio.sleep(0.3)
    served.signal(signal.SIGINT)
    events = await opened.events()
    assert events[-1][0] == "error"
    assert await served.exit_after(sent) < 0.3 + EXIT_SLACK
