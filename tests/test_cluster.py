"""Scale-out with real parts: deploy/nginx.conf in front of two chatproxy processes sharing
a PostgreSQL history store (make demo-cluster's `Cluster`, a database of its own per test).

Which copy served a request is read from the copies' own logs: nginx forwards the request
id, and each copy's access line carries it.
"""

from __future__ import annotations

import asyncio
import io
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from deploy.demo_cluster import DEMO_KEY, NGINX_CONF, Cluster, find_nginx, gateway_config
from tests.browser import require
from tests.history_stores import POSTGRES, admin, run_aside

CHUNKS, GAP = 10, 0.1
MOCK_REPLY = "Hello from the mock!"


@pytest.fixture(autouse=True)
def nginx_installed() -> None:
    require(find_nginx() is not None, "nginx is not installed (bash .ci/services installs it)")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    name = f"chatproxy_cluster_{uuid.uuid4().hex[:12]}"
    run_aside(admin(f"CREATE DATABASE {name}"))
    running = Cluster(
        tmp_path,
        f"{POSTGRES.rpartition('/')[0]}/{name}",
        chunks=CHUNKS,
        gap=GAP,
        shutdown_timeout=10,
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()
        run_aside(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    for copy in running.members:
        assert DEMO_KEY not in copy.log_text()


def served_by(cluster: Cluster, request_id: str) -> list[str]:
    """The copies whose access log has a line for `request_id`."""
    line = re.compile(rf"chatproxy\.access \[{re.escape(request_id)}\] ")
    return [copy.name for copy in cluster.members if line.search(copy.log_text())]


def turn(content: str, conversation_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": content}],
        "conversation_id": conversation_id,
        **extra,
    }


async def history(session: aiohttp.ClientSession, cluster: Cluster, cid: str) -> list[str]:
    async with session.get(f"{cluster.url}/history/{cid}") as resp:
        assert resp.status == 200
        body = await resp.json()
    return [f"{m['role']}: {m['content']}" for m in body["messages"]]


def exchanged(*contents: str) -> list[str]:
    return [line for c in contents for line in (f"user: {c}", f"assistant: {MOCK_REPLY}")]


def test_the_shipped_config_is_what_runs() -> None:
    template = NGINX_CONF.read_text()
    config = gateway_config(template, 9000, [9001, 9002, 9003])
    assert "listen 127.0.0.1:9000;" in config
    servers = re.findall(r"^\s*server 127\.0\.0\.1:(\d+) (.*);$", config, re.M)
    assert [port for port, _ in servers] == ["9001", "9002", "9003"]
    assert {options for _, options in servers} == {"max_fails=1 fail_timeout=10s"}
    # Everything else is the file as shipped.
    strip = re.compile(r"^\s*(listen|server) 127\.0\.0\.1:\d+.*\n", re.M)
    assert strip.sub("", config) == strip.sub("", template)


async def test_turns_on_alternating_copies_stay_whole_and_ordered(cluster: Cluster) -> None:
    cid = f"alternating-{uuid.uuid4().hex}"
    request_ids = [f"turn-{n}-{uuid.uuid4().hex}" for n in range(6)]
    async with aiohttp.ClientSession() as session:
        for n, request_id in enumerate(request_ids):
            async with session.post(
                f"{cluster.url}/chatgpt/",
                json=turn(f"turn {n}", cid),
                headers={"X-Request-ID": request_id},
            ) as resp:
                assert resp.status == 200, await resp.text()
                assert resp.headers["X-Request-ID"] == request_id
        served = [served_by(cluster, request_id) for request_id in request_ids]
        assert all(len(copies) == 1 for copies in served), served
        order = [copies[0] for copies in served]
        assert all(a != b for a, b in pairwise(order)), order
        assert await history(session, cluster, cid) == exchanged(*(f"turn {n}" for n in range(6)))

        # Without a client id, nginx's own $request_id is the one both logs carry; and the
        # copy (TRUSTED_PROXIES=127.0.0.1) believes the client address nginx forwards.
        async with session.get(
            f"{cluster.url}/health", headers={"X-Forwarded-For": "203.0.113.7"}
        ) as resp:
            assert resp.status == 200
            generated = resp.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert len(served_by(cluster, generated)) == 1
    # nginx writes its access line as it finalizes the request, which may be after the
    # client has read the answer: wait for it rather than read once.
    deadline = time.monotonic() + 5
    while f"rid={generated} " not in cluster.access_log.read_text():
        assert time.monotonic() < deadline, "nginx logged no line with its request id"
        await asyncio.sleep(0.05)
    lines = "".join(copy.log_text() for copy in cluster.members).splitlines()
    assert any(generated in line and "203.0.113.7" in line for line in lines)


async def test_a_stream_arrives_in_pieces_through_nginx(cluster: Cluster) -> None:
    arrivals: list[float] = []
    body = b""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{cluster.url}/chatgpt/",
            json=turn("stream please", "s-" + uuid.uuid4().hex, stream=True),
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for piece in resp.content.iter_any():
            arrivals.append(time.monotonic())
            body += piece
    assert body.count(b"event: delta") == CHUNKS and b"event: done" in body
    # The fake sends CHUNKS events GAP seconds apart: buffered, they would come in one
    # block at the end; passed through, they spread over most of (CHUNKS - 1) * GAP.
    assert len(arrivals) >= CHUNKS // 2, len(arrivals)
    assert arrivals[-1] - arrivals[0] >= 0.6 * (CHUNKS - 1) * GAP


async def test_a_body_over_max_body_bytes_stops_at_the_gateway(cluster: Cluster) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{cluster.url}/chatgpt/", data=io.BytesIO(b"x" * (1024 * 1024 + 1))) as resp,
    ):
        assert resp.status == 413
        assert (await resp.json())["type"] == "payload_too_large"


async def test_a_killed_copy_loses_no_acknowledged_turn(cluster: Cluster) -> None:
    """Four conversations talk at once; one copy is SIGKILLed mid-run. A turn that was
    answered is in its conversation, in order; every turn started after the kill is
    answered, through the other copy."""
    victim = cluster.members[0]
    assert victim.process is not None
    killed_at: float | None = None
    acknowledged: dict[str, list[str]] = {}
    after_kill: list[int] = []

    async def talk(session: aiohttp.ClientSession, cid: str) -> None:
        acknowledged[cid] = []
        for n in range(12):
            content = f"{cid} turn {n}"
            started = time.monotonic()
            try:
                async with session.post(f"{cluster.url}/chatgpt/", json=turn(content, cid)) as resp:
                    status = resp.status
                    await resp.read()
            except aiohttp.ClientError:
                status = 0
            if status == 200:
                acknowledged[cid].append(content)
            if killed_at is not None and started > killed_at:
                after_kill.append(status)
            await asyncio.sleep(0.02)

    async def kill_midway(process: subprocess.Popen[bytes]) -> None:
        nonlocal killed_at
        await asyncio.sleep(0.25)
        process.send_signal(signal.SIGKILL)
        await asyncio.get_running_loop().run_in_executor(None, process.wait)
        killed_at = time.monotonic()

    cids = [f"kill-{n}-{uuid.uuid4().hex}" for n in range(4)]
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(kill_midway(victim.process), *(talk(session, cid) for cid in cids))
        assert killed_at is not None
        assert after_kill and set(after_kill) == {200}, after_kill
        for cid in cids:
            stored = await history(session, cluster, cid)
            users = [line.removeprefix("user: ") for line in stored if line.startswith("user: ")]
            # Every answered turn is stored, in order; a turn cut by the kill may or may
            # not be (it was never answered), but nothing is out of place.
            assert [u for u in users if u in acknowledged[cid]] == acknowledged[cid]
            assert users == sorted(users, key=lambda u: int(u.rsplit(" ", 1)[1]))
    assert victim.process.returncode == -signal.SIGKILL


async def test_sigterm_lets_the_stream_in_flight_finish(cluster: Cluster) -> None:
    """Every copy but one is gone; SIGTERM to the last while a stream runs through nginx:
    the stream still ends with its done event, and the copy exits 0."""
    for copy in cluster.members[1:]:
        assert copy.process is not None
        copy.process.kill()
        copy.process.wait()
    last = cluster.members[0]
    assert last.process is not None
    body = b""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{cluster.url}/chatgpt/", json=turn("long one", "t-" + uuid.uuid4().hex, stream=True)
        ) as resp,
    ):
        assert resp.status == 200
        async for piece in resp.content.iter_any():
            if not body:
                last.process.send_signal(signal.SIGTERM)
            body += piece
    assert body.count(b"event: delta") == CHUNKS
    assert b"event: done" in body and b"event: error" not in body
    code = await asyncio.get_running_loop().run_in_executor(None, last.process.wait, 15)
    assert code == 0
    assert "SIGTERM: shutting down" in last.log_text()
