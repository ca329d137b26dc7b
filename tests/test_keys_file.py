"""PROXY_API_KEYS_FILE: keys from a mounted file, reloaded on SIGHUP without dropping a
request, a bad file keeping the keys in use, and keys never written to the log."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from chatproxy.access import reload_api_keys
from chatproxy.app import create_app
from chatproxy.keyring import KeyFileError, key_id, read_key_file
from chatproxy.keys import REDACTOR
from chatproxy.redact import Redactor
from tests.conftest import AiohttpServer, Client, Proxy, make_settings
from tests.fakes.openai_server import FakeOpenAI, completion_body
from tests.test_server_process import free_port, start_server, stop_after, wait_ready

__all__ = ["stop_after"]  # a fixture, used by the process test below

FILE_KEY = "file-key-0123456789"
OTHER_KEY = "file-key-abcdefghij"
ENV_KEY = "env-key-0123456789"


def key_file(tmp_path: Path, *keys: str) -> Path:
    path = tmp_path / "keys"
    path.write_text("# keys for chatproxy\n\n" + "".join(f"  {key}  \n" for key in keys))
    return path


async def status_of(client: Client, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return (await client.get("/status", headers=headers)).status


def test_the_file_format() -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        read_key_file(Path("/nonexistent/keys"))


def test_a_line_with_spaces_inside_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("good-key-1234\nhalf of a key\n")
    with pytest.raises(KeyFileError, match="line 2"):
        read_key_file(path)


async def test_file_keys_and_env_keys_both_work(proxy: Proxy, tmp_path: Path) -> None:
    client = await proxy(proxy_api_keys=ENV_KEY, proxy_api_keys_file=key_file(tmp_path, FILE_KEY))
    assert await status_of(client, FILE_KEY) == 200
    assert await status_of(client, ENV_KEY) == 200
    assert await status_of(client, None) == 401
    assert await status_of(client, "# keys for chatproxy") == 401
    assert await status_of(client, "wrong-key-1234") == 401
    # What the log filter knows: a file key is masked like PROXY_API_KEYS.
    assert client.app[REDACTOR](f"saw {FILE_KEY} here") == "saw *** here"


async def test_reload_adds_and_removes_keys_and_a_bad_file_keeps_them(
    proxy: Proxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = key_file(tmp_path, FILE_KEY)
    client = await proxy(proxy_api_keys_file=path)
    caplog.set_level(logging.INFO, "chatproxy.keys")
    key_file(tmp_path, OTHER_KEY)
    reload_api_keys(client.app)
    assert await status_of(client, OTHER_KEY) == 200
    assert await status_of(client, FILE_KEY) == 401
    assert client.app[REDACTOR](OTHER_KEY) == "***"
    assert f"added {key_id(OTHER_KEY)}; removed {key_id(FILE_KEY)}" in caplog.text

    path.unlink()
    reload_api_keys(client.app)
    assert "not reloaded, the keys in use stay" in caplog.text
    assert await status_of(client, OTHER_KEY) == 200

    path.write_text(f"{OTHER_KEY}\nnot one key\n")
    reload_api_keys(client.app)
    assert await status_of(client, OTHER_KEY) == 200
    assert FILE_KEY not in caplog.text and OTHER_KEY not in caplog.text


async def test_a_key_file_without_keys_refuses_every_key_until_a_reload_brings_one(
    proxy: Proxy, tmp_path: Path
) -> None:
    """PROXY_API_KEYS_FILE set means keys are wanted: an empty file locks the API (fails
    closed), it never opens it to requests without a key."""
    path = key_file(tmp_path)
    client = await proxy(proxy_api_keys_file=path)
    assert await status_of(client, None) == 401
    assert await status_of(client, "anything-at-all") == 401
    assert (await client.get("/health")).status == 200  # the public routes stay public
    key_file(tmp_path, FILE_KEY)
    reload_api_keys(client.app)
    assert await status_of(client, None) == 401
    assert await status_of(client, FILE_KEY) == 200


async def test_emptying_the_file_revokes_every_key_rather_than_turning_auth_off(
    proxy: Proxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = key_file(tmp_path, FILE_KEY)
    client = await proxy(proxy_api_keys_file=path)
    assert await status_of(client, FILE_KEY) == 200
    key_file(tmp_path)  # the operator withdraws the last key (a leaked one, say)
    reload_api_keys(client.app)
    assert await status_of(client, FILE_KEY) == 401
    assert await status_of(client, None) == 401, "no key file key left must not mean open"
    chat = await client.post("/chatgpt/", json={"messages": [{"role": "user", "content": "hi"}]})
    assert chat.status == 401
    assert "no key is accepted" in caplog.text


def test_a_key_file_written_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_bytes(b"\xef\xbb\xbf" + f"{FILE_KEY}\r\n{OTHER_KEY}\r\n".encode())
    assert read_key_file(path) == {FILE_KEY, OTHER_KEY}


def test_an_unreadable_file_at_start_stops_the_start(tmp_path: Path) -> None:
    settings = make_settings(proxy_api_keys_file=tmp_path / "missing")
    with pytest.raises(SystemExit, match=r"^chatproxy: PROXY_API_KEYS_FILE: cannot read .*missing"):
        create_app(settings)


async def test_sighup_reloads_keys_without_dropping_a_request(
    tmp_path: Path, aiohttp_server: AiohttpServer, stop_after: list[subprocess.Popen[bytes]]
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response(completion_body("answered"))

    fake = FakeOpenAI()
    fake.queue(slow)
    upstream = await aiohttp_server(fake.app())
    path = key_file(tmp_path, FILE_KEY)
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"OPENAI_API_KEY=sk-test-key-123456\nOPENAI_BASE_URL={upstream.make_url('/v1')}\n"
        f"PROXY_API_KEYS_FILE={path}\nLOG_LEVEL=DEBUG\n"
    )
    port = free_port()
    proc = start_server(port, env_file)
    stop_after.append(proc)
    await wait_ready(port)
    url = f"http://127.0.0.1:{port}"
    hello = {"messages": [{"role": "user", "content": "hi"}]}

    async with aiohttp.ClientSession() as session:

        async def status(key: str) -> int:
            headers = {"Authorization": f"Bearer {key}"}
            async with session.get(f"{url}/status", headers=headers) as resp:
                return resp.status

        in_flight = asyncio.ensure_future(
            session.post(
                f"{url}/chatgpt/", json=hello, headers={"Authorization": f"Bearer {FILE_KEY}"}
            )
        )
        await asyncio.wait_for(fake.received.wait(), 5)

        key_file(tmp_path, OTHER_KEY)  # FILE_KEY is withdrawn while its request runs
        proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if await status(OTHER_KEY) == 200:
                break
            await asyncio.sleep(0.05)
        assert await status(OTHER_KEY) == 200
        assert await status(FILE_KEY) == 401

        release.set()
        answer = await asyncio.wait_for(in_flight, 5)
        assert answer.status == 200, "the request checked before the reload is answered"
        assert (await answer.json())["messages"][-1]["content"] == "answered"

        path.unlink()  # a bad reload: the keys in use stay
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.3)
        assert await status(OTHER_KEY) == 200
        assert proc.poll() is None, "SIGHUP does not end the process"

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.get_running_loop().run_in_executor(None, proc.wait, 10) == 0
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    assert f"added {key_id(OTHER_KEY)}; removed {key_id(FILE_KEY)}" in output
    assert "not reloaded, the keys in use stay" in output
    for secret in (FILE_KEY, OTHER_KEY, "sk-test-key-123456"):
        assert secret not in output


async def test_sighup_while_starting_up_does_not_end_the_process(
    tmp_path: Path, stop_after: list[subprocess.Popen[bytes]]
) -> None:
    """An orchestrator signals after it rotated the mounted keys, whatever the process is
    doing: one still opening its history store (or loading a model) must not die of it."""
    connected, hang_up = asyncio.Event(), asyncio.Event()

    async def silent_store(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()  # accepts, never answers: the start-up waits HISTORY_TIMEOUT
        await hang_up.wait()
        writer.close()
        await writer.wait_closed()

    store = await asyncio.start_server(silent_store, "127.0.0.1", 0)
    store_port = store.sockets[0].getsockname()[1]
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"PROXY_API_KEYS_FILE={key_file(tmp_path, FILE_KEY)}\n"
        f"HISTORY_STORE=redis://127.0.0.1:{store_port}/0\nHISTORY_TIMEOUT=3\n"
    )
    port = free_port()
    proc = start_server(port, env_file)
    stop_after.append(proc)
    try:
        await asyncio.wait_for(connected.wait(), 15)
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.2)
        assert proc.poll() is None, "SIGHUP during start-up ended the process"
        hang_up.set()
        await wait_ready(port, deadline=15)
    finally:
        hang_up.set()
        proc.send_signal(signal.SIGTERM)
        await asyncio.get_running_loop().run_in_executor(None, proc.wait, 10)
        store.close()
        await store.wait_closed()


def test_a_key_inside_another_is_masked_whole() -> None:
    """Keys of one family (`team-a`, `team-a-admin`): the longer is masked as a whole, not
    cut by the shorter into `***-admin`, which would show the rest of it."""
    short, long = "team-a-key", "team-a-key-admin"
    for redactor in (Redactor([short, long]), Redactor([])):
        redactor.learn([short, long])
        assert redactor(f"saw {long} and {short}") == "saw *** and ***"
    started = Redactor([short])
    started.learn([long])
    assert started(long) == "***"
