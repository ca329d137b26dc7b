"""`chatproxy chat`: a terminal client that keeps the conversation and streams replies."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, TextIO

import aiohttp

HELP = """commands: /reset (new conversation), /status, /models, /provider NAME, /model NAME,
/help, /quit; anything else is sent as your message"""


class ChatSession:
    """One conversation with a running chatproxy."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        url: str,
        provider: str,
        model: str | None,
        out: TextIO,
    ) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.provider = provider
        self.model = model
        self.out = out
        self.messages: list[dict[str, str]] = []

    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    async def command(self, line: str) -> bool:
        """Run a /command; False means quit."""
        name, _, arg = line[1:].partition(" ")
        if name in ("quit", "exit"):
            return False
        if name == "reset":
            self.messages = []
            self.say("(new conversation)")
        elif name == "provider" and arg:
            self.provider, self.messages = arg.strip(), []
            self.say(f"(provider {self.provider}, new conversation)")
        elif name == "model":
            self.model = arg.strip() or None
            self.say(f"(model {self.model or 'default'})")
        elif name in ("status", "models"):
            path = "/status" if name == "status" else f"/{self.provider}/models"
            async with self.http.get(self.url + path) as resp:
                self.say(json.dumps(await resp.json(), ensure_ascii=False, indent=2))
        else:
            self.say(HELP)
        return True

    async def send(self, text: str) -> None:
        body: dict[str, Any] = {
            "messages": [*self.messages, {"role": "user", "content": text}],
            "stream": True,
        }
        if self.model:
            body["model"] = self.model
        async with self.http.post(f"{self.url}/{self.provider}/", json=body) as resp:
            if resp.status != 200:
                error = await resp.json(content_type=None)
                self.say(f"[{resp.status}] {error.get('error', error)}")
                return
            event = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "delta":
                        self.say(data["content"], end="")
                    elif event == "done":
                        self.messages = data["messages"]
                        self.say()
                    elif event == "error":
                        self.say(f"\n[error] {data['error']}")


async def run(
    url: str,
    provider: str,
    model: str | None,
    api_key: str | None,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(headers=headers) as http:
        session = ChatSession(http, url=url, provider=provider, model=model, out=out)
        session.say(f"chatproxy at {url}, provider {provider}. /help for commands.")
        while True:
            session.say("> ", end="")
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            try:
                if line.startswith("/"):
                    if not await session.command(line):
                        break
                else:
                    await session.send(line)
            except aiohttp.ClientError as exc:
                session.say(f"[cannot reach chatproxy at {url}: {exc}]")
