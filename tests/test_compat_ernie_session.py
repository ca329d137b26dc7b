"""The Qianfan ERNIE-Bot server's README replayed: `POST /chat {user_input}` answers
`{response}`, the conversation kept per `sessionid` cookie, on the history layer."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Client, Proxy
from tests.fakes.ernie_server import FakeErnie
from tests.fakes.openai_server import FakeOpenAI

COOKIE = "sessionid"
# A session id as the older server's GET / made them: str(uuid.uuid4())[:16].
OLDER_SESSION = "3f2a1b4c-5d6e-4f"


def cookie(session: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={session}"}


async def post_chat(client: Client, text: str, **kwargs: Any) -> Any:
    resp = await client.post("/chat", json={"user_input": text}, **kwargs)
    assert resp.status == 200, await resp.text()
    return resp


async def test_the_readme_conversation_follows_the_cookie(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    client = await ernie_proxy(history_store="memory://")
    resp = await post_chat(client, "你好")
    assert await resp.json() == {"response": "你好！"}
    session = resp.cookies[COOKIE].value
    assert len(session) == 16 and resp.cookies[COOKIE]["httponly"]

    resp = await post_chat(client, "再见", headers=cookie(session))
    assert COOKIE not in resp.cookies, "a client with a session keeps it"
    sent = fake_ernie.chats[-1]
    assert sent["messages"] == [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！"},
        {"role": "user", "content": "再见"},
    ]
    assert "system" in sent, "ERNIE's system prompt in its own field, as ever"


async def test_an_older_servers_session_id_is_taken_as_it_is(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    client = await ernie_proxy(history_store="memory://")
    await post_chat(client, "你好", headers=cookie(OLDER_SESSION))
    native = await (await client.get(f"/history/session:{OLDER_SESSION}")).json()
    assert [m["content"] for m in native["messages"]] == ["你好", "你好！"]
    assert native["model"] == "ernie/ernie-speed-128k"


async def test_without_a_cookie_each_request_starts_afresh(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    client = await ernie_proxy(history_store="memory://")
    client.session.cookie_jar.clear()
    one = await post_chat(client, "一")
    client.session.cookie_jar.clear()
    two = await post_chat(client, "二")
    assert one.cookies[COOKIE].value != two.cookies[COOKIE].value
    assert fake_ernie.chats[-1]["messages"] == [{"role": "user", "content": "二"}]


async def test_errors_keep_the_error_field(ernie_proxy: Proxy, fake_ernie: FakeErnie) -> None:
    client = await ernie_proxy(history_store="memory://")
    for body in ({"user_input": ""}, {"user_input": 3}):
        resp = await client.post("/chat", json=body)
        assert resp.status == 400
        assert isinstance((await resp.json())["error"], str)
    assert not fake_ernie.chats


async def test_without_the_history_layer(ernie_proxy: Proxy, fake_ernie: FakeErnie) -> None:
    client = await ernie_proxy()
    resp = await client.post("/chat", json={"user_input": "你好"})
    assert resp.status == 503 and "HISTORY_STORE" in (await resp.json())["error"]
    assert not fake_ernie.chats


async def test_sessions_are_scoped_per_key(ernie_proxy: Proxy, fake_ernie: FakeErnie) -> None:
    client = await ernie_proxy(history_store="memory://", proxy_api_keys="key-one-123,key-two-456")
    one = {"Authorization": "Bearer key-one-123", **cookie(OLDER_SESSION)}
    two = {"Authorization": "Bearer key-two-456", **cookie(OLDER_SESSION)}
    await post_chat(client, "一", headers=one)
    await post_chat(client, "二", headers=two)
    assert fake_ernie.chats[-1]["messages"] == [{"role": "user", "content": "二"}]
    await post_chat(client, "三", headers=one)
    assert [m["content"] for m in fake_ernie.chats[-1]["messages"]] == ["一", "你好！", "三"]


async def test_compat_provider_sends_it_elsewhere(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy(history_store="memory://", compat_provider="chatgpt")
    resp = await post_chat(client, "你好", headers=cookie(OLDER_SESSION))
    assert await resp.json() == {"response": "Hello!"}
    await post_chat(client, "再见", headers=cookie(OLDER_SESSION))
    contents = [m["content"] for m in fake_openai.requests[-1]["messages"]]
    assert contents[1:] == ["你好", "Hello!", "再见"]


async def test_a_cookie_that_is_not_utf8_is_a_session_like_any_other(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    """Cookie bytes are the client's: undecodable ones (kept by aiohttp as surrogates) name
    a session of their own, with no 500 on the way."""
    client = await ernie_proxy(history_store="memory://")
    body = b'{"user_input": "\xe4\xbd\xa0\xe5\xa5\xbd"}'
    for _ in range(2):
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(
            b"POST /chat HTTP/1.1\r\nHost: chatproxy\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n"
            b"Cookie: sessionid=\xff\xfe\r\n\r\n%s" % (len(body), body)
        )
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert [m["role"] for m in fake_ernie.chats[-1]["messages"]] == ["user", "assistant", "user"]


async def test_under_a_root_path_the_session_cookie_stays_under_it(
    ernie_proxy: Proxy, fake_ernie: FakeErnie
) -> None:
    """Behind a gateway that serves other services on the same host, the session id goes
    to chatproxy's paths alone."""
    client = await ernie_proxy(history_store="memory://", root_path="/chatproxy")
    resp = await client.post("/chatproxy/chat", json={"user_input": "你好"})
    assert resp.status == 200, await resp.text()
    assert resp.cookies[COOKIE]["path"] == "/chatproxy/"
    plain = await post_chat(await ernie_proxy(history_store="memory://"), "你好")
    assert plain.cookies[COOKIE]["path"] == "/"
