"""One conversation with a running chatproxy: where it is kept, what is sent, the commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from chatproxy.config import PROVIDER_NAMES
from chatproxy.terminal.api import ModelChoices, ServerApi, ServerError

HELP = """commands:
  /reset (or reset)     start a new conversation
  /history              show the conversation so far
  /provider [NAME]      switch provider (the model goes back to its default)
  /model [NAME]         pick a model of this provider; no NAME: the provider's default
  /models               the models this provider offers
  /status (or status)   this client's settings and the server's /status
  /help                 this list
  /quit (or quit)       leave; so do Ctrl-D and Ctrl-C twice
Ctrl-C during a reply stops it; anything else you type is sent as your message."""
# C0 and C1 control characters but tab and newline: in a terminal they are commands (clear
# the screen, retitle the window, OSC 52 to set the clipboard), and a reply or a stored
# message is text a model or another client wrote. Shown in caret notation instead.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def inert(text: str) -> str:
    """`text` with its control characters made visible, so none acts on the terminal."""
    return _CONTROLS.sub(_caret, text.replace("\r\n", "\n"))


def _caret(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20 or code == 0x7F:
        return "^" + chr(code ^ 0x40)
    return f"<U+{code:04X}>"


# The words one older server's client took without a slash.
BARE_WORDS = {"reset": "/reset", "status": "/status", "quit": "/quit", "exit": "/quit"}


class StartError(Exception):
    """The session cannot begin as asked (an unknown provider, a conversation not there)."""


class ChatSession:
    """The client's state: provider, model, and the conversation, kept on the server when
    its history layer is on (only new messages are sent) or here as the whole array."""

    def __init__(self, api: ServerApi, *, provider: str | None, model: str | None, out: TextIO):
        self.api = api
        self.provider = provider or PROVIDER_NAMES[0]
        self.model = model
        self.out = out
        self.messages: list[dict[str, str]] = []  # kept here when the server keeps none
        self.conversation_id: str | None = None
        self.server_side: bool | None = None  # unknown until the first message or --conversation
        self.stopped: str | None = None  # the message whose reply Ctrl-C stopped

    def say(self, text: str = "", end: str = "\n") -> None:
        """Every line the client prints: the server's words too, made inert."""
        self.out.write(inert(text) + end)
        self.out.flush()

    async def start(self, conversation_id: str | None, *, provider_given: bool) -> None:
        try:
            served: list[str] | None = await self.api.providers()
        except ServerError as exc:
            if exc.status == 401:  # every later request would fail the same way
                raise StartError(f"{exc} (give --api-key or set CHATPROXY_API_KEY)") from None
            self.say(f"(could not list the server's providers: {exc})")
            served = None
        if conversation_id is not None:
            await self.resume(conversation_id, adopt_provider=not provider_given)
        if served is not None and self.provider not in served:
            raise StartError(self.unknown_provider(self.provider, served))

    async def resume(self, conversation_id: str, *, adopt_provider: bool) -> None:
        """Continue a conversation the server keeps, showing it first."""
        try:
            stored = await self.api.conversation(conversation_id)
        except ServerError as exc:
            if exc.status != 404:
                raise
            if not await self.api.history_enabled():
                raise StartError(
                    "this chatproxy keeps no conversations (its history layer is off), "
                    "so --conversation cannot resume one"
                ) from None
            stored = {"messages": [], "model": None}
            self.say(f"(no conversation '{conversation_id}' yet: it starts now)")
        self.conversation_id, self.server_side = conversation_id, True
        provider, _, model = str(stored.get("model") or "").partition("/")
        if adopt_provider and provider and model:
            self.provider, self.model = provider, model
        self.show(stored["messages"])
        self.say(f"(conversation {conversation_id}, provider {self.provider})")

    def show(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            if message["role"] != "system":
                self.say(f"{message['role']}: {message['content']}")

    def unknown_provider(self, name: str, served: list[str]) -> str:
        why = "is not configured on this chatproxy" if name in PROVIDER_NAMES else "is unknown"
        return f"provider '{name}' {why}; it serves: {', '.join(served) or 'none'}"

    def new_conversation(self) -> None:
        """Forget the conversation; a server-side one stays there, resumable by its id."""
        self.messages, self.conversation_id = [], None

    async def handle(self, line: str) -> bool:
        """Run a command or send a message; False means quit."""
        line = BARE_WORDS.get(line.lower(), line)
        if not line.startswith("/"):
            await self.send(line)
            return True
        name, _, arg = line[1:].partition(" ")
        if name in ("quit", "exit"):
            return False
        command = self.commands().get(name)
        if command is None:
            self.say(f"unknown command /{name}\n{HELP}")
        else:
            await command(arg.strip())
        return True

    def commands(self) -> dict[str, Callable[[str], Awaitable[None]]]:
        return {
            "reset": self.reset,
            "history": self.history,
            "provider": self.switch_provider,
            "model": self.switch_model,
            "models": self.list_models,
            "status": self.status,
            "help": self.help,
        }

    async def help(self, arg: str) -> None:
        self.say(HELP)

    async def reset(self, arg: str) -> None:
        self.new_conversation()
        self.say("(new conversation)")

    async def history(self, arg: str) -> None:
        messages = self.messages
        if self.conversation_id is not None:
            messages = (await self.api.conversation(self.conversation_id))["messages"]
        self.show(messages)
        if not messages:
            self.say("(nothing said yet)")

    async def switch_provider(self, name: str) -> None:
        try:
            served = await self.api.providers()
        except ServerError as exc:
            served = list(PROVIDER_NAMES)
            self.say(f"(could not list the server's providers: {exc}; checked the known names)")
        if name not in served:
            if name:
                self.say(self.unknown_provider(name, served))
            else:
                self.say(f"(provider {self.provider}; this chatproxy serves: {', '.join(served)})")
            return
        self.provider, self.model = name, None
        self.new_conversation()
        choices = await self.choices()
        default = f"model {choices.default}" if choices else "its default model"
        self.say(f"(provider {name}, {default}, new conversation)")

    async def switch_model(self, name: str) -> None:
        if not name:
            self.model = None
            self.say(f"(model: {self.provider}'s default)")
            return
        choices = await self.choices()
        if choices is not None and name not in (choices.default, *choices.names):
            self.say(f"no model '{name}' at {self.provider}; it offers: {', '.join(choices.names)}")
            return
        self.model = name
        self.say(f"(model {name})")

    async def choices(self) -> ModelChoices | None:
        """The provider's models, or None (and a warning) when they cannot be listed."""
        try:
            return await self.api.models(self.provider)
        except ServerError as exc:
            self.say(f"(could not list {self.provider}'s models: {exc})")
            return None

    async def list_models(self, arg: str) -> None:
        choices = await self.api.models(self.provider)
        for name in choices.names:
            marks = [
                mark
                for mark, of in (("default", choices.default), ("chosen", self.model))
                if of == name
            ]
            self.say(f"  {name}" + (f" ({', '.join(marks)})" if marks else ""))

    async def status(self, arg: str) -> None:
        mine = {
            "url": self.api.url,
            "provider": self.provider,
            "model": self.model or "(the provider's default)",
            "conversation": self.conversation_id or f"kept here, {len(self.messages)} messages",
        }
        self.say(json.dumps(mine, ensure_ascii=False, indent=2))
        self.say(json.dumps(await self.api.status(), ensure_ascii=False, indent=2))

    async def ensure_conversation(self) -> None:
        """Decide, at the first message, where the conversation is kept."""
        if self.server_side is False or self.conversation_id is not None:
            return
        self.conversation_id = await self.api.create_conversation()
        self.server_side = self.conversation_id is not None
        if self.conversation_id is not None:
            self.say(
                f"(conversation {self.conversation_id} is kept on the server; "
                f"resume it with --conversation {self.conversation_id})"
            )

    async def send(self, text: str) -> None:
        await self.ensure_conversation()
        user = {"role": "user", "content": text}
        body: dict[str, Any] = {"stream": True}
        if self.conversation_id is not None:
            body.update(messages=[user], conversation_id=self.conversation_id)
        else:
            body["messages"] = [*self.messages, user]
        if self.model:
            body["model"] = self.model
        self.stopped = text  # until the reply is over, Ctrl-C stops this message's reply
        try:
            await self.receive(body)
        except asyncio.CancelledError:
            raise  # `stopped` stays set, for interrupted() to report
        except BaseException:
            self.stopped = None
            raise
        self.stopped = None

    async def interrupted(self) -> None:
        """After Ctrl-C stopped a command: say what became of it.

        A stopped reply is in no conversation: the array here changes only on a `done`
        event, and the server records a turn only once the upstream's stream ended, which
        it can have done just before the Ctrl-C; then the server kept it, and it is shown.
        """
        text, self.stopped = self.stopped, None
        if text is None:
            self.say("\n(stopped)")
            return
        if self.conversation_id is not None:
            messages = (await self.api.conversation(self.conversation_id))["messages"]
            tail = [(m["role"], m["content"]) for m in messages[-2:]]
            if len(tail) == 2 and tail[0] == ("user", text) and tail[1][0] == "assistant":
                self.say("\n(reply stopped, but the server had already kept it whole:)")
                self.show(messages[-1:])
                return
        self.say("\n(reply stopped; it is not part of the conversation)")

    async def receive(self, body: dict[str, Any]) -> None:
        # aclosing: the response is released at the last event, not when collected.
        async with contextlib.aclosing(self.api.chat_events(self.provider, body)) as events:
            async for event, data in events:
                if event == "delta":
                    self.say(str(data.get("content", "")), end="")
                elif event == "done":
                    if self.conversation_id is None:
                        self.messages = data["messages"]
                    self.say()
                    return
                elif event == "error":
                    self.say(f"\n[error] {data.get('error', data)}")
                    return
        self.say("\n[the reply ended before it was complete; it is not kept]")
