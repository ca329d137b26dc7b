"""`chatproxy chat`'s loop: read a line, run it, and let Ctrl-C stop what is running."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp

from chatproxy.terminal.api import ServerApi, ServerError, Unreachable
from chatproxy.terminal.reader import (
    LineReader,
    PlainReader,
    TerminalReader,
    history_path,
    open_history,
)
from chatproxy.terminal.session import ChatSession, StartError

# Long enough for a slow model's whole reply; Ctrl-C is the way to give up sooner.
REPLY_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=600)


@dataclass(slots=True)
class ChatOptions:
    url: str
    provider: str | None = None
    model: str | None = None
    api_key: str | None = None
    conversation: str | None = None


def make_reader(stdin: TextIO, out: TextIO) -> LineReader:
    """prompt_toolkit when a person types at a terminal; plain lines from a pipe or file."""
    if stdin.isatty() and out.isatty():
        return TerminalReader(open_history(history_path()))
    return PlainReader(stdin, out)


async def interruptible(work: Coroutine[Any, Any, bool]) -> bool | None:
    """Run `work` so that Ctrl-C (SIGINT) cancels it alone, not the client: its result, or
    None when it was interrupted."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    # No signal handlers on Windows or outside the main thread: Ctrl-C then ends the client.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        return await task
    except asyncio.CancelledError:
        if not interrupted:
            raise
        return None
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


async def converse(session: ChatSession, reader: LineReader) -> None:
    """Lines until quit, end of input, or Ctrl-C twice in a row at the prompt."""
    just_interrupted = False
    while True:
        try:
            line = (await reader.read()).strip()
        except EOFError:
            return
        except KeyboardInterrupt:
            if just_interrupted:
                return
            just_interrupted = True
            session.say("(line cleared; Ctrl-C again or Ctrl-D to quit)")
            continue
        just_interrupted = False
        if not line:
            continue
        try:
            outcome = await interruptible(session.handle(line))
            if outcome is None:
                await session.interrupted()
            elif not outcome:
                return
        except (ServerError, Unreachable) as exc:
            session.say(str(exc))


async def run(options: ChatOptions, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    """The whole session; its exit status."""
    headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    async with aiohttp.ClientSession(headers=headers, timeout=REPLY_TIMEOUT) as http:
        session = ChatSession(
            ServerApi(http, options.url), provider=options.provider, model=options.model, out=out
        )
        try:
            await session.start(options.conversation, provider_given=options.provider is not None)
        except (Unreachable, ServerError, StartError) as exc:
            session.say(f"chatproxy chat: {exc}")
            return 1
        session.say(f"chatproxy at {options.url}, provider {session.provider}. /help for commands.")
        await converse(session, make_reader(stdin, out))
    return 0


def main(options: ChatOptions) -> int:
    """From `python -m chatproxy chat`: a Ctrl-C that lands outside a reply (a piped
    session, start-up) ends the client quietly."""
    try:
        return asyncio.run(run(options))
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return 130
