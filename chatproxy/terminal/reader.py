"""Reading the user's lines: prompt_toolkit in a terminal, plain lines from a pipe.

Both raise EOFError at the end of input (Ctrl-D) and KeyboardInterrupt for Ctrl-C at the
prompt, so the loop that calls them treats a terminal and a script alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path
from typing import Protocol, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, History, InMemoryHistory

PROMPT = "> "


class LineReader(Protocol):
    async def read(self) -> str: ...


def history_path() -> Path:
    """Where typed lines are kept between runs: the XDG state directory, as shells do."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "chatproxy" / "chat_history"


def open_history(path: Path) -> History:
    """The history file, or one kept in memory when it cannot be written (a read-only
    home, a container without one): recall still works for this run."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The user's own (0600, as shells keep theirs): the lines are what they asked a model.
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
    except OSError:
        return InMemoryHistory()
    with contextlib.suppress(OSError):  # made looser before; a filesystem without modes
        path.chmod(0o600)
    return FileHistory(str(path))


class TerminalReader:
    """Line editing, Up/Down through earlier lines, Ctrl-R search: prompt_toolkit's prompt."""

    def __init__(self, history: History) -> None:
        self.session: PromptSession[str] = PromptSession(history=history)

    async def read(self) -> str:
        return await self.session.prompt_async(PROMPT)


class PlainReader:
    """Lines from a pipe or a file, so scripts can drive the client.

    A daemon thread reads them: a blocked read must not keep the process alive at exit,
    which a thread of asyncio's default executor would.
    """

    def __init__(self, stdin: TextIO, out: TextIO) -> None:
        self.stdin = stdin
        self.out = out
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.thread: threading.Thread | None = None

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while line := self.stdin.readline():
                loop.call_soon_threadsafe(self.lines.put_nowait, line)
            loop.call_soon_threadsafe(self.lines.put_nowait, None)
        except RuntimeError:
            pass  # the client quit (its loop is closed) with lines still unread

    async def read(self) -> str:
        if self.thread is None:
            loop = asyncio.get_running_loop()
            self.thread = threading.Thread(target=self._pump, args=(loop,), daemon=True)
            self.thread.start()
        self.out.write(PROMPT)
        self.out.flush()
        line = await self.lines.get()
        if line is None:
            self.lines.put_nowait(None)  # every later read ends too
            raise EOFError
        return line.rstrip("\r\n")
