"""The chat page in a real headless Chromium, against the real app and a slow fake upstream.

Debian's chromium, driven by Playwright's async API inside the test's event loop (the
`browser` fixture of tests/browser.py: in CI it must run, not skip).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Page

from chatproxy.app import create_app
from tests.conftest import AiohttpServer, openai_settings
from tests.fakes.openai_server import FakeOpenAI, status, stream

API_KEY = "page-browser-key-0123456789"
SLOW_PARTS = ["Streams ", "arrive ", "one ", "piece ", "at ", "a ", "time."]
PAUSE = 0.2  # seconds between the fake's chunks: long enough for a paint between them
ASSISTANT = ".message.assistant .bubble"
FINISHED = ".message.assistant .meta:not([hidden])"  # the model line shows once a reply is done

# Records each text the last reply showed, so a test can tell streaming from one final paint.
RECORD_REPLY_TEXTS = """() => {
  window.replyTexts = [];
  new MutationObserver(() => {
    const bubbles = document.querySelectorAll(".message.assistant .bubble");
    const text = bubbles.length ? bubbles[bubbles.length - 1].textContent : "";
    const texts = window.replyTexts;
    if (text && texts[texts.length - 1] !== text) texts.push(text);
  }).observe(document.getElementById("log"), {childList: true, subtree: true, characterData: true});
}"""


class Chat:
    """One browser tab on the page, failing its test on any script error."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.script_errors: list[str] = []
        page.on("pageerror", lambda error: self.script_errors.append(str(error)))

    @classmethod
    async def open(cls, context: BrowserContext, base: str) -> Chat:
        context.set_default_timeout(15_000)
        chat = cls(await context.new_page(), base)
        await chat.page.goto(base)
        await chat.ready()
        return chat

    async def ready(self) -> None:
        await self.page.wait_for_selector("#composer[data-ready=true]", state="attached")

    async def send(self, text: str) -> None:
        await self.page.fill("#prompt", text)
        await self.page.press("#prompt", "Enter")

    async def wait_replies(self, count: int) -> None:
        # Locators rather than wait_for_function: the page's own policy forbids eval.
        await self.page.locator(FINISHED).nth(count - 1).wait_for(state="attached")

    async def texts(self, selector: str) -> list[str]:
        return [text.strip() for text in await self.page.locator(selector).all_text_contents()]

    async def stored(self, name: str) -> Any:
        raw = await self.page.evaluate(f"localStorage.getItem('chatproxy.{name}')")
        return json.loads(raw) if raw else None

    async def screenshot(self, path: Path) -> None:
        assert await self.page.screenshot(path=path, full_page=True)

    def assert_no_script_errors(self) -> None:
        assert not self.script_errors, self.script_errors


async def start_proxy(aiohttp_server: AiohttpServer, fake: FakeOpenAI, **settings: Any) -> str:
    server: TestServer = await aiohttp_server(create_app(openai_settings(fake, **settings)))
    return str(server.make_url("/"))


def user_texts(upstream_request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in upstream_request["messages"] if m["role"] == "user"]


async def test_reply_streams_and_the_conversation_survives_a_reload(
    browser: Browser, aiohttp_server: AiohttpServer, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    base = await start_proxy(
        aiohttp_server, fake_openai, history_store=f"sqlite:///{tmp_path / 'history.db'}"
    )
    context = await browser.new_context(viewport={"width": 1100, "height": 760})
    chat = await Chat.open(context, base)
    assert await chat.texts("#provider option") == ["chatgpt"]
    assert "gpt-4o" in await chat.texts("#model option")

    # Shift+Enter is a new line, not a send.
    await chat.page.fill("#prompt", "What is")
    await chat.page.press("#prompt", "Shift+Enter")
    await chat.page.type("#prompt", "streaming?")
    assert await chat.page.input_value("#prompt") == "What is\nstreaming?"
    assert await chat.page.locator(".message").count() == 0

    fake_openai.queue(stream(SLOW_PARTS, pause=PAUSE))
    await chat.page.evaluate(RECORD_REPLY_TEXTS)
    await chat.page.press("#prompt", "Enter")
    await chat.wait_replies(1)
    shown = await chat.page.evaluate("window.replyTexts")
    final = "".join(SLOW_PARTS).strip()
    assert shown[-1] == final
    growing = [text for text in shown if final.startswith(text) and text != final]
    assert len(growing) >= 3, shown  # seen part-way, several times: it streamed in
    assert await chat.texts(".message.user .bubble") == ["What is\nstreaming?"]
    assert fake_openai.requests[0]["stream"] is True
    assert user_texts(fake_openai.requests[0]) == ["What is\nstreaming?"]

    conversation = await chat.stored("conversation")
    conversation_id = conversation["id"]
    assert conversation_id
    assert conversation_id in (await chat.page.text_content("#status") or "")
    await chat.screenshot(tmp_path / "chat.png")

    # After a reload the page asks the server for the conversation and shows it again.
    async with chat.page.expect_response(lambda r: "/history/" in r.url) as history_answer:
        await chat.page.reload()
    assert (await history_answer.value).status == 200
    await chat.ready()
    assert await chat.texts(".message.user .bubble") == ["What is\nstreaming?"]
    assert await chat.texts(ASSISTANT) == [final]

    # The next turn names the conversation and sends only the new message.
    fake_openai.queue(stream(["Second ", "answer."], pause=PAUSE))
    async with chat.page.expect_request(
        lambda r: r.method == "POST" and "chatgpt/" in r.url
    ) as sent:
        await chat.send("And again?")
    body = json.loads((await sent.value).post_data or "{}")
    assert body["conversation_id"] == conversation_id
    assert [m["content"] for m in body["messages"]] == ["And again?"]
    await chat.wait_replies(2)
    assert user_texts(fake_openai.requests[1]) == ["What is\nstreaming?", "And again?"]

    # A new conversation starts empty, and its first message creates a new id.
    await chat.page.click("#new-conversation")
    assert await chat.page.locator(".message").count() == 0
    assert await chat.page.is_visible("#empty")
    fake_openai.queue(stream(["Fresh."], pause=PAUSE))
    await chat.send("Hello?")
    await chat.wait_replies(1)
    fresh = await chat.stored("conversation")
    assert fresh["id"] and fresh["id"] != conversation_id
    assert user_texts(fake_openai.requests[2]) == ["Hello?"]
    await chat.page.reload()
    await chat.ready()
    assert await chat.texts(ASSISTANT) == ["Fresh."]

    # The server unreachable at a reload: the browser's copy, and the error saying why.
    await chat.page.route("**/history/*", lambda route: route.abort())
    await chat.page.reload()
    await chat.ready()
    assert await chat.texts(ASSISTANT) == ["Fresh."]
    assert "reach the server" in (await chat.page.text_content("#error-text") or "")
    chat.assert_no_script_errors()


async def test_markup_in_a_reply_is_shown_as_text(
    browser: Browser, aiohttp_server: AiohttpServer, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    base = await start_proxy(aiohttp_server, fake_openai, history_store="memory://")
    context = await browser.new_context(viewport={"width": 1100, "height": 760})
    chat = await Chat.open(context, base)
    script = "<script>window.pwned=1</script>"
    image = "<img src=x onerror=window.pwned=2>"
    parts = [
        "Here is **bold** and `<b>code</b>`.\n\n",
        f"{script[:12]}",
        f"{script[12:]} and {image}\n\n",
        "- one\n- two **<i>x</i>**\n\n",
        "```html\n<script>window.pwned=3</script>\n```\n",
    ]
    fake_openai.queue(stream(parts, pause=0.05))
    await chat.send("Show me some HTML")
    await chat.wait_replies(1)
    reply = chat.page.locator(ASSISTANT)
    text = await reply.text_content() or ""
    assert script in text and image in text and "<b>code</b>" in text
    assert await chat.page.evaluate("typeof window.pwned") == "undefined"
    for tag in ("img", "script", "b", "i"):
        assert await reply.locator(tag).count() == 0, tag
    assert await chat.page.locator("img").count() == 1  # the header's icon, nothing else
    # The Markdown-ish parts became elements, their contents text.
    assert await reply.locator("strong").first.text_content() == "bold"
    assert await reply.locator("code").first.text_content() == "<b>code</b>"
    assert await chat.texts(f"{ASSISTANT} li") == ["one", "two <i>x</i>"]
    assert await reply.locator("pre code").text_content() == "<script>window.pwned=3</script>"
    await chat.screenshot(tmp_path / "chat.png")
    chat.assert_no_script_errors()


async def test_with_keys_on_the_key_field_appears_and_then_works(
    browser: Browser, aiohttp_server: AiohttpServer, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    base = await start_proxy(
        aiohttp_server, fake_openai, proxy_api_keys=API_KEY, history_store="memory://"
    )
    context = await browser.new_context(viewport={"width": 1100, "height": 760})
    chat = await Chat.open(context, base)
    assert await chat.page.is_visible("#key-form")
    assert await chat.page.is_hidden("#key-refused")  # no key was sent: none was refused
    assert await chat.page.locator("#provider option").count() == 0
    await chat.screenshot(tmp_path / "chat-key.png")

    await chat.page.fill("#api-key", API_KEY)
    await chat.page.press("#api-key", "Enter")
    await chat.page.wait_for_selector("#provider option[value=chatgpt]", state="attached")
    assert await chat.page.is_hidden("#key-form")
    assert await chat.page.is_hidden("#error")
    fake_openai.queue(stream(["Keyed ", "reply."], pause=PAUSE))
    await chat.send("Hi with a key")
    await chat.wait_replies(1)
    assert await chat.texts(ASSISTANT) == ["Keyed reply."]
    assert user_texts(fake_openai.requests[0]) == ["Hi with a key"]

    # The key is remembered: a reload needs no typing.
    await chat.page.reload()
    await chat.ready()
    assert await chat.page.is_hidden("#key-form")
    assert await chat.texts(ASSISTANT) == ["Keyed reply."]
    await chat.screenshot(tmp_path / "chat.png")

    # A key the server does not know brings the field back, with the error.
    await chat.page.evaluate(f"localStorage.setItem('chatproxy.apiKey', {'wrong-key-000'!r})")
    await chat.page.reload()
    await chat.ready()
    assert await chat.page.is_visible("#key-form")
    assert await chat.page.is_visible("#key-refused")
    chat.assert_no_script_errors()


async def test_without_history_the_whole_conversation_is_resent(
    browser: Browser, aiohttp_server: AiohttpServer, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    base = await start_proxy(aiohttp_server, fake_openai)
    context = await browser.new_context(
        viewport={"width": 1100, "height": 760}, color_scheme="dark"
    )
    chat = await Chat.open(context, base)
    fake_openai.queue(stream(["First ", "answer."], pause=PAUSE))
    await chat.send("First question")
    await chat.wait_replies(1)
    fake_openai.queue(stream(["Second ", "answer."], pause=PAUSE))
    await chat.send("Second question")
    await chat.wait_replies(2)

    second = fake_openai.requests[1]
    assert "conversation_id" not in second
    turns = [(m["role"], m["content"]) for m in second["messages"] if m["role"] != "system"]
    assert turns == [
        ("user", "First question"),
        ("assistant", "First answer."),
        ("user", "Second question"),
    ]
    assert "browser" in (await chat.page.text_content("#status") or "")

    await chat.page.reload()
    await chat.ready()
    assert await chat.texts(ASSISTANT) == ["First answer.", "Second answer."]
    await chat.screenshot(tmp_path / "chat.png")

    await chat.page.click("#new-conversation")
    assert await chat.page.locator(".message").count() == 0
    assert (await chat.stored("conversation"))["messages"] == []
    chat.assert_no_script_errors()


async def test_errors_are_shown_in_the_page(
    browser: Browser, aiohttp_server: AiohttpServer, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    base = await start_proxy(aiohttp_server, fake_openai, upstream_retries=0)
    context = await browser.new_context(viewport={"width": 1100, "height": 760})
    chat = await Chat.open(context, base)

    # Cut off mid-stream: the stream's error event, the partial text kept, the prompt back.
    fake_openai.queue(stream(["Half ", "an ", "answer"], done=False, pause=PAUSE))
    await chat.send("Will this finish?")
    await chat.page.wait_for_selector("#error:not([hidden])")
    assert "Half an answer" in (await chat.page.text_content(ASSISTANT) or "")
    assert await chat.page.locator(".message.failed").count() == 2
    assert await chat.page.input_value("#prompt") == "Will this finish?"

    # Refused before the first byte: the JSON error body's message and status.
    await chat.page.click("#error-close")
    assert await chat.page.is_hidden("#error")
    fake_openai.queue(status(400, {"error": {"message": "The model 'gpt-9' does not exist"}}))
    await chat.page.press("#prompt", "Enter")
    await chat.page.wait_for_selector("#error:not([hidden])")
    error = await chat.page.text_content("#error-text") or ""
    assert "gpt-9" in error and "HTTP 400" in error

    # Nothing is kept of the failed turns: the next success starts the conversation.
    fake_openai.queue(stream(["Fine."]))
    await chat.page.fill("#prompt", "Once more")
    await chat.page.press("#prompt", "Enter")
    await chat.wait_replies(1)
    assert [m["content"] for m in (await chat.stored("conversation"))["messages"]] == [
        "Once more",
        "Fine.",
    ]
    await chat.screenshot(tmp_path / "chat.png")

    # Stop, mid-reply: the partial reply is marked, and not kept.
    fake_openai.queue(stream(["Slow ", "words ", *["more "] * 50], pause=PAUSE))
    await chat.send("Tell me a long story")
    await chat.page.locator(ASSISTANT).nth(3).filter(has_text="Slow").wait_for()
    assert await chat.page.text_content("#send") == "Stop"
    await chat.page.click("#send")
    await chat.page.locator(".message.failed .note").nth(2).wait_for()
    assert "Stopped" in (await chat.page.locator(".note").nth(2).text_content() or "")
    assert await chat.page.text_content("#send") == "Send"
    assert len((await chat.stored("conversation"))["messages"]) == 2
    await chat.page.fill("#prompt", "")

    # The server gone: a network error, said in words.
    await chat.page.route("**/chatgpt/", lambda route: route.abort())
    await chat.send("Anyone there?")
    await chat.page.wait_for_selector("#error:not([hidden])")
    assert "reach the server" in (await chat.page.text_content("#error-text") or "")
    chat.assert_no_script_errors()


async def test_on_a_phone_the_page_fits_and_the_input_stays_usable(
    browser: Browser, aiohttp_server: AiohttpServer, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    base = await start_proxy(aiohttp_server, fake_openai, history_store="memory://")
    context = await browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    chat = await Chat.open(context, base)
    for number in range(3):
        fake_openai.queue(
            stream(
                [
                    f"Answer {number}: a **long** reply that wraps on a narrow screen, ",
                    "with `inline code` and a block:\n\n",
                    "```python\nprint('a line of code far wider than a phone screen')\n```\n",
                    "- a list item\n- and another one",
                ]
            )
        )
        await chat.send(f"Question {number} from a phone")
        await chat.wait_replies(number + 1)
    width = await chat.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the screen; the code block scrolls inside
    box = await chat.page.locator("#prompt").bounding_box()
    assert box is not None and box["y"] + box["height"] <= 844 and box["width"] > 200
    send = await chat.page.locator("#send").bounding_box()
    assert send is not None and send["y"] + send["height"] <= 844
    await chat.screenshot(tmp_path / "chat-phone.png")
    await chat.page.screenshot(path=tmp_path / "chat-phone-viewport.png")
    chat.assert_no_script_errors()


async def test_under_a_root_path_every_request_stays_under_it(
    browser: Browser, aiohttp_server: AiohttpServer, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    base = await start_proxy(
        aiohttp_server, fake_openai, root_path="/chatproxy", history_store="memory://"
    )
    context = await browser.new_context(viewport={"width": 1100, "height": 760})
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    chat = await Chat.open(context, base + "chatproxy/")
    fake_openai.queue(stream(["Under ", "a prefix."], pause=PAUSE))
    await chat.send("Where am I?")
    await chat.wait_replies(1)
    await chat.page.reload()
    await chat.ready()
    assert await chat.texts(ASSISTANT) == ["Under a prefix."]
    await chat.screenshot(tmp_path / "chat.png")
    paths = {url.removeprefix(base) for url in requested}
    assert {"chatproxy/", "chatproxy/models", "chatproxy/history", "chatproxy/chatgpt/"} <= paths
    assert all(path.startswith("chatproxy/") for path in paths), paths
    chat.assert_no_script_errors()
