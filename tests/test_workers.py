"""`--workers N`: N processes serving one port (SO_REUSEPORT) under a supervising parent.

Which process answered a connection is read from /proc: the server side of the client's
TCP connection is a socket one of the workers holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import AiohttpServer
from tests.fakes.openai_server import FakeOpenAI, hang, stream
from tests.test_server_process import free_port

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"worker (\d+) \(pid (\d+)\) is listening")
KEY = "sk-test-workers-0123456789"


class Workers:
    """A `python -m chatproxy --workers N` process and its log."""

    def __init__(
        self, tmp_path: Path, count: int, upstream: str = "http://127.0.0.1:9/v1", **env: str
    ):
        self.port = free_port()
        self.log = tmp_path / "workers.log"
        env_file = tmp_path / ".env"
        env_file.write_text(f"OPENAI_API_KEY={KEY}\nOPENAI_BASE_URL={upstream}\n")
        inherited = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chatproxy",
                    "--port",
                    str(self.port),
                    "--env-file",
                    str(env_file),
                    "--workers",
                    str(count),
                ],
                env={**inherited, "PYTHONPATH": str(ROOT), **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def listening(self, count: int, timeout: float = 30.0) -> dict[int, int]:
        """{worker number: pid} once `count` "is listening" lines are logged (the latest
        pid per worker)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.findall(self.text())
            if len(found) >= count:
                return {int(n): int(pid) for n, pid in found}
            assert self.process.poll() is None, self.text()
            time.sleep(0.05)
        raise AssertionError(f"{count} workers did not listen:\n{self.text()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.kill()
            return self.process.wait()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Workers]]:
    """Workers started by a test, stopped (and their children gone) after it."""
    running: list[Workers] = []
    yield running
    for workers in running:
        pids = [int(pid) for _, pid in LISTENING.findall(workers.text())]
        workers.stop()
        deadline = time.monotonic() + 5
        while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:  # no worker outlives its parent
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"worker pid {pid} outlived the parent")
        assert KEY not in workers.text()


def server_side_owner(client: socket.socket, server_port: int, pids: list[int]) -> int | None:
    """The pid of the worker holding the server end of `client`'s connection."""
    client_port = client.getsockname()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.rsplit(":", 1)[1], 16) == server_port and (
            int(remote.rsplit(":", 1)[1], 16) == client_port
        ):
            inode = fields[9]
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def health_over_new_connection(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
    return sock


def test_two_workers_answer_on_one_port_from_two_pids(
    tmp_path: Path, started: list[Workers]
) -> None:
    workers = Workers(tmp_path, 2)
    started.append(workers)
    pids = list(workers.listening(2).values())
    assert len(set(pids)) == 2 and workers.process.pid not in pids
    connections = [health_over_new_connection(workers.port) for _ in range(24)]
    try:
        owners = {server_side_owner(sock, workers.port, pids) for sock in connections}
    finally:
        for sock in connections:
            sock.close()
    assert owners == set(pids), "the kernel spreads connections over both workers"
    assert workers.stop() == 0


async def test_sigterm_drains_every_worker_and_exits_0(
    tmp_path: Path, aiohttp_server: AiohttpServer, started: list[Workers]
) -> None:
    fake = FakeOpenAI(default=hang(1.0))
    upstream = await aiohttp_server(fake.app())
    workers = Workers(tmp_path, 2, str(upstream.make_url("/v1")))
    started.append(workers)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, workers.listening, 2)
    async with aiohttp.ClientSession() as session:
        pending = asyncio.ensure_future(
            session.post(
                f"http://127.0.0.1:{workers.port}/chatgpt/",
                json={"messages": [{"role": "user", "content": "hi"}]},
            )
        )
        await asyncio.wait_for(fake.received.wait(), 10)
        workers.process.send_signal(signal.SIGTERM)
        resp = await pending
        assert resp.status == 200, "the request in flight at SIGTERM still gets its answer"
        assert (await resp.json())["messages"][-1]["content"] == "too late"
    assert await loop.run_in_executor(None, workers.process.wait, 20) == 0
    assert workers.text().count("SIGTERM: shutting down") == 2


def test_a_killed_worker_is_replaced(tmp_path: Path, started: list[Workers]) -> None:
    workers = Workers(tmp_path, 2)
    started.append(workers)
    before = workers.listening(2)
    os.kill(before[1], signal.SIGKILL)
    after = workers.listening(3)
    assert after[2] == before[2] and after[1] not in before.values()
    assert re.search(rf"worker 1 \(pid {before[1]}\) died \(code -9\)", workers.text())
    for _ in range(8):
        health_over_new_connection(workers.port).close()
    assert workers.stop() == 0


@pytest.mark.parametrize(
    ("setting", "refusal"),
    [
        ({"LOCAL_MODEL": "qwen"}, "WORKERS=2 cannot serve LOCAL_MODEL"),
        ({"HISTORY_STORE": "memory://"}, "WORKERS=2 cannot share HISTORY_STORE=memory://"),
    ],
)
def test_one_process_settings_refuse_more_than_one_worker(
    tmp_path: Path, setting: dict[str, str], refusal: str
) -> None:
    port = free_port()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "chatproxy", "--port", str(port), "--workers", "2"],
        env={**os.environ, "PYTHONPATH": str(ROOT), **setting},
        capture_output=True,
        text=True,
        cwd=tmp_path,  # no .env here
        timeout=30,
    )
    assert result.returncode != 0
    assert refusal in result.stderr
    assert "Traceback" not in result.stderr and "listening" not in result.stderr
    assert time.monotonic() - started < 10, "refused before anything started"


def test_workers_that_cannot_listen_exit_non_zero(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env_file = tmp_path / ".env"
        env_file.write_text(f"OPENAI_API_KEY={KEY}\n")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "chatproxy",
                "--port",
                str(taken.getsockname()[1]),
                "--env-file",
                str(env_file),
                "--workers",
                "2",
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "before it listened" in result.stderr, result.stderr


def requests_served(exposition: str, provider: str) -> float:
    """The sum of chatproxy_requests_total's samples for `provider`."""
    pattern = re.compile(
        rf'^chatproxy_requests_total{{[^}}]*provider="{provider}"[^}}]*}} (\S+)$', re.M
    )
    return sum(float(value) for value in pattern.findall(exposition))


async def test_metrics_add_up_every_worker(
    tmp_path: Path, aiohttp_server: AiohttpServer, started: list[Workers]
) -> None:
    fake = FakeOpenAI()
    upstream = await aiohttp_server(fake.app())
    workers = Workers(tmp_path, 2, str(upstream.make_url("/v1")), TMPDIR=str(tmp_path))
    started.append(workers)
    await asyncio.get_running_loop().run_in_executor(None, workers.listening, 2)
    url = f"http://127.0.0.1:{workers.port}"
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    # A connection each, so the kernel spreads them over both workers.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(30):
            async with session.post(f"{url}/chatgpt/", json=chat) as resp:
                assert resp.status == 200
        scrapes = []
        for _ in range(8):
            async with session.get(f"{url}/metrics") as resp:
                assert resp.status == 200
                scrapes.append(requests_served(await resp.text(), "chatgpt"))
    assert scrapes == [30.0] * 8, "whichever worker answers, /metrics counts both"
    assert await asyncio.get_running_loop().run_in_executor(None, workers.stop) == 0
    assert not metrics_folders(tmp_path), "the parent removes the folder it made"


def metrics_folders(tmp: Path) -> list[Path]:
    return list(tmp.glob("chatproxy-metrics-*"))


def idle_child(settings: object, index: int, ready: object, parent: int) -> None:
    """A stand-in worker for the supervisor's own tests: never listens, ends by signal."""
    time.sleep(30)


def test_sigterm_while_workers_start_stops_those_started_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signal between two children's starts reaches the later ones as well: the parent
    used to signal only the children it had then, and wait forever for the others."""
    from chatproxy import workers
    from tests.conftest import make_settings

    monkeypatch.setattr(workers, "child_main", idle_child)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    supervisor = workers.Supervisor(make_settings(workers=2, port=free_port()))
    start = supervisor.start

    def start_then_signalled(slot: workers.Slot) -> object:
        receiver = start(slot)
        if slot.index == 1:
            supervisor.forward(signal.SIGTERM)  # as the handler would, between the starts
        return receiver

    monkeypatch.setattr(supervisor, "start", start_then_signalled)
    children: list[int] = []

    def kill_left_over() -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    stuck = threading.Timer(15, kill_left_over)
    original_start_all = supervisor.start_all

    def start_all() -> bool:
        try:
            return original_start_all()
        finally:
            children.extend(p.pid for p in supervisor.alive() if p.pid is not None)
            stuck.start()

    monkeypatch.setattr(supervisor, "start_all", start_all)
    began = time.monotonic()
    try:
        code = supervisor.run()
    finally:
        stuck.cancel()
    assert time.monotonic() - began < 10, "every child was stopped, none waited for"
    assert code == 0


def test_a_worker_whose_parent_is_already_gone_does_not_serve() -> None:
    """PR_SET_PDEATHSIG fires only for a parent that dies after it was set: a child whose
    parent died while it started would serve on, orphaned, holding the port."""
    from chatproxy import workers

    assert workers.still_parented(os.getppid())
    assert not workers.still_parented(os.getppid() + 1_000_000)


def test_sighup_while_a_worker_starts_does_not_end_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload (SIGHUP) forwarded to a worker that has not yet installed its handler: its
    default action would end the worker, and at start-up the whole service with it."""
    from chatproxy import workers
    from tests.conftest import make_settings

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    settings = make_settings(
        workers=1, port=free_port(), openai_api_key=KEY, openai_base_url="http://127.0.0.1:9/v1"
    )
    supervisor = workers.Supervisor(settings)
    start = supervisor.start

    def start_then_reloaded(slot: workers.Slot) -> object:
        receiver = start(slot)
        supervisor.forward(signal.SIGHUP)  # as the handler would, the child still starting
        return receiver

    monkeypatch.setattr(supervisor, "start", start_then_reloaded)
    try:
        assert supervisor.start_all(), "the worker lived to listen"
    finally:
        supervisor.forward(signal.SIGTERM)
        for process in supervisor.alive():
            process.join(20)
    assert [p.exitcode for p in supervisor.alive()] == [0]


def test_a_parent_killed_outright_leaves_no_worker_behind(
    tmp_path: Path, started: list[Workers]
) -> None:
    # TMPDIR: the metrics folder a killed parent cannot remove stays in tmp_path.
    workers = Workers(tmp_path, 2, TMPDIR=str(tmp_path))
    started.append(workers)
    pids = list(workers.listening(2).values())
    workers.process.kill()  # SIGKILL: the parent forwards nothing
    workers.process.wait(10)
    deadline = time.monotonic() + 15
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")], "workers outlived it"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", workers.port)) != 0, "nothing holds the port"


def streams_in_flight(exposition: str) -> float:
    pattern = re.compile(r'^chatproxy_streams_in_flight{provider="chatgpt"} (\S+)$', re.M)
    return sum(float(value) for value in pattern.findall(exposition))


async def test_a_killed_workers_streams_leave_the_in_flight_gauge(
    tmp_path: Path, aiohttp_server: AiohttpServer, started: list[Workers]
) -> None:
    """The gauge sums the live processes only: a worker killed mid-stream (it never
    decremented) stops counting once the parent has seen it die."""
    fake = FakeOpenAI(default=stream(["Hel", "lo"], stall_after=1))
    upstream = await aiohttp_server(fake.app())
    workers = Workers(tmp_path, 2, str(upstream.make_url("/v1")), TMPDIR=str(tmp_path))
    started.append(workers)
    loop = asyncio.get_running_loop()
    before = await loop.run_in_executor(None, workers.listening, 2)
    url = f"http://127.0.0.1:{workers.port}"
    chat = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        held = await session.post(f"{url}/chatgpt/", json=chat)
        assert held.status == 200
        await held.content.readline()

        async def gauge() -> float:
            async with session.get(f"{url}/metrics") as resp:
                return streams_in_flight(await resp.text())

        assert await gauge() == 1
        transport = held.connection.transport if held.connection else None
        assert transport is not None
        sock = transport.get_extra_info("socket")
        owner = server_side_owner(sock, workers.port, list(before.values()))
        assert owner is not None
        os.kill(owner, signal.SIGKILL)
        await loop.run_in_executor(None, workers.listening, 3)
        assert await gauge() == 0
        held.close()
    assert await loop.run_in_executor(None, workers.stop) == 0


def test_live_gauges_of_an_earlier_run_are_forgotten_at_start(tmp_path: Path) -> None:
    """An operator's PROMETHEUS_MULTIPROC_DIR outlives a run: a worker of an earlier run
    killed mid-stream (with its parent, which never saw it die) left a live gauge file."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    from chatproxy import workers

    earlier_run = (
        "from prometheus_client import Gauge\n"
        "Gauge('chatproxy_streams_in_flight', 'd', ['provider'], multiprocess_mode='livesum')"
        ".labels('chatgpt').inc()\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", earlier_run], env=env, check=True, timeout=30)
    assert list(tmp_path.glob("gauge_livesum_*.db"))
    workers.forget_dead_processes(str(tmp_path))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert streams_in_flight(generate_latest(registry).decode()) == 0
