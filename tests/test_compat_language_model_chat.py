"""The aiohttp chatgpt/gigachat proxy's README (LanguageModelChat) replayed: its routes are
chatproxy's native ones, its `.env` names are accepted, and resending the whole array keeps
the conversation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatproxy.config import Settings
from tests.conftest import OPENAI_KEY, AiohttpClient, Proxy, serve
from tests.fakes.gigachat_server import FakeGigaChat
from tests.fakes.openai_server import FakeOpenAI

SYSTEM = "You are a helpful assistant. Answer clearly and concisely."
# The README's request bodies, as written.
README_CHATGPT_BODY = """{
    "model": "gpt-3.5-turbo",
    "messages": [
        {
            "role": "user",
            "content": "Привет!"
        }
    ]
}"""
README_GIGACHAT_BODY = README_CHATGPT_BODY.replace("gpt-3.5-turbo", "GigaChat:latest")
JSON = {"Content-Type": "application/json"}


def roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


async def test_the_readme_chatgpt_request(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy()
    resp = await client.post("/chatgpt/", data=README_CHATGPT_BODY, headers=JSON)
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert fake_openai.requests[-1]["model"] == "gpt-3.5-turbo"
    # The README's answer: the model, and the array with the system prompt and the reply last.
    assert roles(answer["messages"]) == ["system", "user", "assistant"]
    assert answer["messages"][-1] == {"role": "assistant", "content": "Hello!"}
    assert "model" in answer

    # Keeping the conversation as the README says: send the whole array back each time.
    resent = {
        "model": "gpt-3.5-turbo",
        "messages": [*answer["messages"], {"role": "user", "content": "Как дела?"}],
    }
    answer = await (await client.post("/chatgpt/", json=resent)).json()
    sent = fake_openai.requests[-1]["messages"]
    assert [m["content"] for m in sent] == [SYSTEM, "Привет!", "Hello!", "Как дела?"]
    assert roles(answer["messages"]) == ["system", "user", "assistant", "user", "assistant"]


async def test_the_readme_gigachat_request(giga_proxy: Proxy, fake_gigachat: FakeGigaChat) -> None:
    client = await giga_proxy()
    resp = await client.post("/gigachat/", data=README_GIGACHAT_BODY, headers=JSON)
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert roles(answer["messages"]) == ["system", "user", "assistant"]
    assert answer["messages"][1] == {"role": "user", "content": "Привет!"}


async def test_the_readme_env_names_are_read(
    aiohttp_client: AiohttpClient, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    env.write_text(
        f"URL_GPT='{fake_openai.base_url}/chat/completions'\n"
        f"API_KEY='{OPENAI_KEY}'\n"
        "SCOPE='GIGACHAT_API_PERS'\n"
        "AUTH_URL='https://ngw.devices.sberbank.ru:9443/api/v2/oauth'\n"
    )
    client = await serve(aiohttp_client, Settings(_env_file=env))
    resp = await client.post("/chatgpt/", data=README_CHATGPT_BODY, headers=JSON)
    assert resp.status == 200, await resp.text()
    assert fake_openai.headers[-1]["Authorization"] == f"Bearer {OPENAI_KEY}"
