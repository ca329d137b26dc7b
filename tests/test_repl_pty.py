"""`chatproxy chat` at a real terminal: keys typed into a pseudo-terminal, as a person would.

The client runs as a subprocess whose controlling terminal is the pty, so Ctrl-C typed
while a reply streams reaches it as SIGINT, and at the prompt as prompt_toolkit's key.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from chatproxy.terminal.reader import PROMPT
from tests.conftest import Client, Proxy, gigachat_settings
from tests.fakes.gigachat_server import FakeGigaChat
from tests.fakes.openai_server import FakeOpenAI, reply, stream

ROOT = Path(__file__).resolve().parent.parent
UP, CTRL_C, CTRL_D = "\x1b[A", "\x03", "\x04"
WAIT = 15.0  # seconds for the client to show something; generous for a busy machine
# Cursor moves, colours, mode switches and the like: what a screen would not show as text.
ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]|\x1b[=>]|\r")


def take_terminal() -> None:
    """In the child, after setsid: make the pty (its stdin) the controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A pty with `chatproxy chat` on the other side."""

    def __init__(self, process: subprocess.Popen[bytes], master: int) -> None:
        self.process = process
        self.master = master
        self.raw = b""
        self.seen = 0  # expect() looks only past what it matched last

    @classmethod
    def start(cls, url: str, *options: str, state: Path) -> Terminal:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TERM": "xterm",
            "XDG_STATE_HOME": str(state),
            "PROMPT_TOOLKIT_NO_CPR": "1",  # no terminal here answers cursor-position queries
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "chatproxy", "chat", "--url", url, *options],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            preexec_fn=take_terminal,
        )
        os.close(slave)
        os.set_blocking(master, False)
        return cls(process, master)

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except (BlockingIOError, OSError):  # OSError: EIO once the child is gone
                return
            if not chunk:
                return
            self.raw += chunk

    @property
    def screen(self) -> str:
        return ESCAPES.sub("", self.raw.decode(errors="replace"))

    async def expect(self, text: str) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            self._drain()
            found = self.screen.find(text, self.seen)
            if found >= 0:
                self.seen = found + len(text)
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} never appeared; the terminal shows:\n{self.screen}")
            await asyncio.sleep(0.02)

    async def prompt(self) -> None:
        """Wait for the next prompt: prompt_toolkit draws it once the terminal is in raw
        mode, where Ctrl-C and Ctrl-D are keys rather than a signal and an end of file."""
        await self.expect(PROMPT.rstrip())  # the space after it is drawn as a cursor move

    async def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())
        await asyncio.sleep(0.05)  # a person's pace: one key sequence per read

    async def exit_code(self) -> int:
        deadline = time.monotonic() + WAIT
        while (code := self.process.poll()) is None:
            self._drain()
            if time.monotonic() > deadline:
                pytest.fail(f"the client did not exit; the terminal shows:\n{self.screen}")
            await asyncio.sleep(0.02)
        self._drain()
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


Launch = Callable[..., Terminal]


@pytest.fixture
async def terminal(tmp_path: Path) -> AsyncIterator[Launch]:
    """A factory: `chatproxy chat` against a test client's server, at a fresh pty."""
    started: list[Terminal] = []

    def launch(client: Client, *options: str) -> Terminal:
        url = str(client.make_url("/")).rstrip("/")
        started.append(Terminal.start(url, *options, state=tmp_path / "state"))
        return started[-1]

    yield launch
    for term in started:
        term.close()
        assert "Traceback" not in term.screen, term.screen


def said(fake: FakeOpenAI) -> list[list[str]]:
    """What each upstream request held, system prompt aside."""
    return [[m["content"] for m in r["messages"] if m["role"] != "system"] for r in fake.requests]


async def test_up_arrow_recalls_the_line_and_history_is_kept(
    proxy: Proxy, fake_openai: FakeOpenAI, terminal: Launch, tmp_path: Path
) -> None:
    fake_openai.default = stream(["Hello!"])
    term = terminal(await proxy())
    await term.expect("/help for commands")
    await term.type("first line\r")
    await term.expect("Hello!")
    await term.prompt()
    await term.type(UP)
    await term.type("\r")
    await term.expect("Hello!")
    assert [r[-1] for r in said(fake_openai)] == ["first line", "first line"]
    assert all("\x1b" not in str(r) for r in fake_openai.requests), "no escape bytes sent"
    await term.type("quit\r")
    assert await term.exit_code() == 0
    history = (tmp_path / "state" / "chatproxy" / "chat_history").read_text()
    assert "+first line" in history, "typed lines are kept for the next run"


async def test_ctrl_c_at_the_prompt_clears_the_line_and_twice_quits(
    proxy: Proxy, fake_openai: FakeOpenAI, terminal: Launch
) -> None:
    fake_openai.default = stream(["Hello!"])
    term = terminal(await proxy())
    await term.expect("/help for commands")
    await term.prompt()
    await term.type("half a thought")
    await term.type(CTRL_C)
    await term.expect("(line cleared; Ctrl-C again or Ctrl-D to quit)")
    assert term.process.poll() is None, "one Ctrl-C does not quit"
    await term.type("kept\r")
    await term.expect("Hello!")
    assert said(fake_openai) == [["kept"]]
    await term.prompt()
    await term.type(CTRL_C)
    await term.type(CTRL_C)
    assert await term.exit_code() == 0


@pytest.mark.parametrize("store", [None, "memory://"], ids=["kept-here", "kept-on-server"])
async def test_ctrl_c_during_a_reply_stops_it_and_keeps_the_conversation(
    proxy: Proxy, fake_openai: FakeOpenAI, terminal: Launch, store: str | None
) -> None:
    fake_openai.default = stream(["Hello!"])
    fake_openai.queue(stream(["Hello!"]), stream(["Slow", "never"], stall_after=1))
    client = await proxy(history_store=store)
    term = terminal(client)
    await term.expect("/help for commands")
    await term.type("one\r")
    await term.expect("Hello!")
    await term.type("two\r")
    await term.expect("Slow")
    await term.type(CTRL_C)
    await term.expect("(reply stopped; it is not part of the conversation)")
    await term.type("three\r")
    await term.expect("Hello!")
    assert said(fake_openai)[2] == ["one", "Hello!", "three"], "the abandoned turn is gone"
    if store is not None:
        conversation_id = term.screen.split("(conversation ", 1)[1].split(" ", 1)[0]
        stored = await (await client.get(f"/history/{conversation_id}")).json()
        assert [m["content"] for m in stored["messages"]] == ["one", "Hello!", "three", "Hello!"]
    await term.prompt()
    await term.type(CTRL_D)
    assert await term.exit_code() == 0


async def test_provider_is_checked_and_switching_resets_the_model(
    proxy: Proxy, fake_openai: FakeOpenAI, fake_gigachat: FakeGigaChat, terminal: Launch
) -> None:
    term = terminal(await proxy(**gigachat_settings(fake_gigachat)))
    await term.expect("/help for commands")
    await term.type("/model gpt-5-turbo\r")
    await term.expect("no model 'gpt-5-turbo' at chatgpt; it offers: gpt-4o, gpt-4o-mini")
    await term.type("/model gpt-4o\r")
    await term.expect("(model gpt-4o)")
    await term.type("/provider nope\r")
    await term.expect("provider 'nope' is unknown; it serves: chatgpt, gigachat")
    await term.type("/provider ernie\r")
    await term.expect("provider 'ernie' is not configured on this chatproxy")
    await term.type("/provider gigachat\r")
    await term.expect("(provider gigachat, model GigaChat, new conversation)")
    await term.type("hi\r")
    await term.expect("Привет")
    assert [chat["model"] for chat in fake_gigachat.chats] == ["GigaChat"]
    assert fake_openai.requests == []
    await term.type("quit\r")
    assert await term.exit_code() == 0


async def test_conversation_resumes_a_server_side_one(
    proxy: Proxy, fake_openai: FakeOpenAI, terminal: Launch
) -> None:
    fake_openai.queue(reply("Earlier answer"))
    fake_openai.default = stream(["Hello!"])
    client = await proxy(history_store="memory://")
    created: dict[str, Any] = await (await client.post("/history")).json()
    conversation_id = created["conversation_id"]
    first = {"messages": [{"role": "user", "content": "earlier question"}]}
    answer = await client.post("/chatgpt/", json={**first, "conversation_id": conversation_id})
    assert answer.status == 200
    term = terminal(client, "--conversation", conversation_id)
    await term.expect("user: earlier question\nassistant: Earlier answer\n")
    await term.expect(f"(conversation {conversation_id}, provider chatgpt)")
    await term.type("and now?\r")
    await term.expect("Hello!")
    assert said(fake_openai)[1] == ["earlier question", "Earlier answer", "and now?"]
    await term.type("/history\r")
    await term.expect("user: and now?\nassistant: Hello!\n")
    await term.type("quit\r")
    assert await term.exit_code() == 0
