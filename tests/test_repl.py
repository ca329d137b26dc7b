"""`chatproxy chat` driven by a script: a subprocess reading piped lines, against a live server.

tests/test_repl_pty.py types into it at a real terminal instead.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import aiohttp
import pytest
from aiohttp import web
from prompt_toolkit.history import FileHistory, InMemoryHistory

from chatproxy.__main__ import build_parser
from chatproxy.terminal.api import ServerApi, ServerError, sse_lines
from chatproxy.terminal.reader import history_path, open_history
from chatproxy.terminal.session import ChatSession, inert
from tests.conftest import AiohttpServer, Client, Proxy
from tests.fakes.openai_server import FakeOpenAI, status, stream

ROOT = Path(__file__).resolve().parent.parent


async def chat_at(url: str, typed: str, *options: str, **env: str) -> tuple[int, str]:
    """Run `chatproxy chat --url url`, pipe `typed` in, return its exit code and output."""
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
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    out, _ = await asyncio.wait_for(process.communicate(typed.encode()), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def chat(client: Client, typed: str, *options: str, **env: str) -> tuple[int, str]:
    return await chat_at(str(client.make_url("/")).rstrip("/"), typed, *options, **env)


def roles(request: dict[str, object]) -> list[str]:
    messages = request["messages"]
    assert isinstance(messages, list)
    return [m["role"] for m in messages]


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
    assert "gpt-4o-mini (default)" in text, "/models printed the provider's list"
    second = fake_openai.requests[1]["messages"]
    assert roles(fake_openai.requests[1]) == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == "Hello!" and second[3]["content"] == "И ещё"
    assert roles(fake_openai.requests[2]) == ["system", "user"]


async def test_the_api_key_can_come_from_the_environment(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = stream(["Hello!"])
    client = await proxy(proxy_api_keys="repl-key")
    code, text = await chat(client, "hi\n", CHATPROXY_API_KEY="repl-key")
    assert code == 0 and "Hello!" in text, text
    assert "repl-key" not in text


async def test_a_missing_api_key_is_said_at_once(proxy: Proxy) -> None:
    client = await proxy(proxy_api_keys="repl-key")
    code, text = await chat(client, "hi\n")
    assert code == 1
    assert text.startswith("chatproxy chat: [401] missing or invalid API key")
    assert "CHATPROXY_API_KEY" in text and "Traceback" not in text


async def test_chat_reports_errors_without_crashing(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(
        status(400, {"error": {"message": "context too long for this model"}}),
        stream(["Hal"], done=False),  # breaks off after its first byte: an error event
    )
    fake_openai.default = stream(["Hello!"])
    client = await proxy()
    code, text = await chat(client, "hi\nagain\nthird\n")
    assert code == 0 and "Traceback" not in text
    assert "\n> [400] chatgpt rejected the request: context too long for this model\n" in text
    assert '{"error"' not in text, "the JSON error's message is shown, not its body"
    assert "\n> Hal\n[error] " in text
    assert "Hello!" in text, "the client went on"
    last = fake_openai.requests[-1]["messages"]
    assert [m["content"] for m in last[1:]] == ["third"], "failed turns are not kept"


async def test_the_older_clients_bare_words(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = stream(["Hello!"])
    client = await proxy()
    code, text = await chat(client, "one\nreset\ntwo\nstatus\nquit\nnever sent\n")
    assert code == 0, text
    assert [r["messages"][-1]["content"] for r in fake_openai.requests] == ["one", "two"]
    assert roles(fake_openai.requests[1]) == ["system", "user"], "reset began anew"
    assert '"provider": "chatgpt"' in text and '"uptime_s"' in text, "status: client and server"


async def test_the_server_keeps_the_conversation_when_it_can(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = stream(["Hello!"])
    client = await proxy(history_store="memory://")
    code, text = await chat(client, "first\nsecond\n/history\n")
    assert code == 0, text
    assert fake_openai.requests[1]["messages"][1:] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "second"},
    ]
    conversation_id = text.split("(conversation ", 1)[1].split(" ", 1)[0]
    assert f"--conversation {conversation_id}" in text, "the id is printed for resuming"
    stored = await (await client.get(f"/history/{conversation_id}")).json()
    assert [m["content"] for m in stored["messages"]] == ["first", "Hello!", "second", "Hello!"]
    assert "user: second\nassistant: Hello!\n" in text, "/history showed it"


async def test_resuming_needs_the_history_layer(proxy: Proxy) -> None:
    client = await proxy()
    code, text = await chat(client, "hi\n", "--conversation", "abc")
    assert code == 1
    assert "history layer is off" in text and "Traceback" not in text


async def test_a_server_that_is_not_there_is_one_clear_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, text = await chat_at(f"http://127.0.0.1:{port}", "hi\n")
    assert code == 1
    assert text.strip().splitlines() == [
        f"chatproxy chat: cannot reach chatproxy at http://127.0.0.1:{port}: connection refused"
    ]


def test_model_is_the_older_servers_name_for_local_model() -> None:
    assert build_parser().parse_args(["--model", "qwen2.5-0.5b"]).local_model == "qwen2.5-0.5b"
    chat_args = build_parser().parse_args(["chat", "--model", "gpt-4o"])
    assert chat_args.model == "gpt-4o" and chat_args.local_model is None


class StoredConversation:
    """The one call ChatSession.interrupted() makes, answered from a fixed conversation."""

    url = "http://chatproxy.test"

    def __init__(self, messages: list[dict[str, str]]) -> None:
        self.messages = messages

    async def conversation(self, conversation_id: str) -> dict[str, object]:
        return {"conversation_id": conversation_id, "messages": self.messages}


@pytest.mark.parametrize(
    ("stored", "verdict"),
    [
        ([{"role": "user", "content": "q"}], "it is not part of the conversation"),
        (
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "all of it"}],
            "the server had already kept it whole:)\nassistant: all of it",
        ),
    ],
    ids=["abandoned", "finished-just-before"],
)
async def test_a_stopped_reply_is_reported_as_the_server_kept_it(
    stored: list[dict[str, str]], verdict: str
) -> None:
    """Ctrl-C can land after the upstream finished and the server recorded the turn."""
    out = io.StringIO()
    api = cast(ServerApi, StoredConversation(stored))
    session = ChatSession(api, provider="chatgpt", model=None, out=out)
    session.conversation_id, session.stopped = "c1", "q"
    await session.interrupted()
    assert verdict in out.getvalue()
    assert session.stopped is None


def test_typed_lines_go_to_the_xdg_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = history_path()
    assert path == tmp_path / "state" / "chatproxy" / "chat_history"
    assert isinstance(open_history(path), FileHistory) and path.exists()


def test_history_stays_in_memory_where_it_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    assert isinstance(open_history(blocker / "chatproxy" / "chat_history"), InMemoryHistory)


async def session_at(
    client: Client, http: aiohttp.ClientSession
) -> tuple[ChatSession, io.StringIO]:
    out = io.StringIO()
    api = ServerApi(http, str(client.make_url("/")).rstrip("/"))
    return ChatSession(api, provider="chatgpt", model=None, out=out), out


async def test_control_sequences_in_a_reply_never_reach_the_terminal(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    """A model can be talked into writing escape sequences (clear the screen, retitle the
    window, set the clipboard through OSC 52): the client shows them as text, inert."""
    hostile = "ok\x1b[2J\x1b]52;c;ZXZpbA==\x07\x9b31m\rdone\tend"
    fake_openai.default = stream([hostile])
    client = await proxy()
    async with aiohttp.ClientSession() as http:
        session, out = await session_at(client, http)
        await session.handle("hi")
        await session.handle("/history")
    text = out.getvalue()
    assert not any(ch in text for ch in "\x1b\x07\x9b\r"), repr(text)
    assert "ok^[[2J^[]52;c;ZXZpbA==^G" in text and "done\tend" in text


async def test_a_conversation_longer_than_a_stream_line_buffer_goes_on(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    """Kept here, the whole conversation comes back in the `done` event, one SSE line that
    outgrows aiohttp's line limit (512 KiB) after a long paste: the client must go on."""
    fake_openai.default = stream(["fine"])
    client = await proxy()
    async with aiohttp.ClientSession() as http:
        session, out = await session_at(client, http)
        await session.handle("x" * 600_000)
        await session.handle("and after it?")
    assert out.getvalue().count("fine") == 2
    assert [m["role"] for m in session.messages][-4:] == ["user", "assistant"] * 2


async def test_a_stream_that_is_not_chatproxys_is_an_error_not_a_crash(
    aiohttp_server: AiohttpServer,
) -> None:
    """A gateway's page or a wrong --url answering 200: one error line, the client goes on."""

    async def garbage(request: web.Request) -> web.StreamResponse:
        return web.Response(text="event: delta\ndata: <html>gateway</html>\n\n")

    app = web.Application()
    app.router.add_post("/chatgpt/", garbage)
    server = await aiohttp_server(app)
    out = io.StringIO()
    async with aiohttp.ClientSession() as http:
        session = ChatSession(
            ServerApi(http, str(server.make_url("/")).rstrip("/")),
            provider="chatgpt",
            model=None,
            out=out,
        )
        session.server_side = False
        with pytest.raises(ServerError, match="not a JSON object"):
            await session.handle("hi")
    assert inert("a\r\nb\x1b") == "a\nb^["


async def test_stream_lines_are_whole_however_the_bytes_are_cut() -> None:
    """Lines split anywhere (a character's bytes too) come out whole, \\r\\n or \\n."""
    text = 'event: delta\r\ndata: {"content": "привет"}\n\nevent: done\ndata: {}'
    encoded = text.encode()

    class Pieces:
        def __init__(self, size: int) -> None:
            self.size = size

        async def iter_any(self) -> AsyncIterator[bytes]:
            for start in range(0, len(encoded), self.size):
                yield encoded[start : start + self.size]

    for size in (1, 2, 3, 7, len(encoded)):
        lines = [line async for line in sse_lines(cast(aiohttp.StreamReader, Pieces(size)))]
        assert lines == text.replace("\r\n", "\n").split("\n"), size


def test_the_typed_lines_file_is_private(tmp_path: Path) -> None:
    """What one types to a model is nobody else's: the file is the user's alone (0600, as
    shells keep their history), also when it was made before with a looser mode."""
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "state" / "chatproxy" / "chat_history"
        open_history(path)
        assert path.stat().st_mode & 0o777 == 0o600
        path.chmod(0o644)
        open_history(path)
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old_umask)
