"""The native route's happy path and the system prompt rule."""

from __future__ import annotations

import json
from typing import Any

from chatproxy.config import DEFAULT_SYSTEM_PROMPT
from chatproxy.schemas import ChatResponse
from tests.conftest import OPENAI_KEY, Proxy
from tests.fakes.openai_server import FakeOpenAI, reply

USER = {"role": "user", "content": "Привет!"}


async def test_reply_extends_the_array(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy()
    resp = await client.post(
        "/chatgpt/",
        json={"model": "gpt-4o", "messages": [USER], "temperature": 0.3, "max_tokens": 50},
    )
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    assert body["messages"] == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        USER,
        {"role": "assistant", "content": "Hello!"},
    ]
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert body["finish_reason"] == "stop"
    sent = fake_openai.requests[0]
    assert sent["model"] == "gpt-4o"
    assert sent["messages"][0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 50
    assert "top_p" not in sent and "stream" not in sent
    assert fake_openai.headers[0]["Authorization"] == f"Bearer {OPENAI_KEY}"


async def test_the_answer_keeps_to_the_chat_response_schema(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    """The handler builds its JSON by hand; ChatResponse is the contract it must keep."""
    client = await proxy()
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    body = await resp.read()
    answer = ChatResponse.model_validate_json(body)
    assert [m.role for m in answer.messages] == ["system", "user", "assistant"]
    assert answer.usage.total_tokens > 0 and answer.finish_reason == "stop"
    assert json.loads(body) == answer.model_dump(mode="json", exclude_unset=True)


async def test_path_without_trailing_slash_and_default_model(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy(openai_model="gpt-4.1-nano")
    resp = await client.post("/chatgpt", json={"messages": [USER]})
    assert resp.status == 200
    assert fake_openai.requests[0]["model"] == "gpt-4.1-nano"


async def test_resent_array_gets_no_second_system_prompt(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    first = await (await client.post("/chatgpt/", json={"messages": [USER]})).json()
    fake_openai.default = reply("Second answer")
    follow_up = [*first["messages"], {"role": "user", "content": "И ещё?"}]
    second = await (await client.post("/chatgpt/", json={"messages": follow_up})).json()
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert [m["role"] for m in fake_openai.requests[1]["messages"]].count("system") == 1
    assert second["messages"][-1]["content"] == "Second answer"


async def test_client_system_message_is_kept_in_prepend_mode(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy(system_prompt="Operator rules.")
    own = {"role": "system", "content": "Talk like a pirate."}
    await client.post("/chatgpt/", json={"messages": [own, USER]})
    assert fake_openai.requests[0]["messages"][:2] == [own, USER]


async def test_always_mode_puts_the_operator_first_once(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy(system_prompt="Operator rules.", system_prompt_mode="always")
    own = {"role": "system", "content": "Talk like a pirate."}
    body = await (await client.post("/chatgpt/", json={"messages": [own, USER]})).json()
    operator = {"role": "system", "content": "Operator rules."}
    assert fake_openai.requests[0]["messages"][:3] == [operator, own, USER]
    await client.post("/chatgpt/", json={"messages": body["messages"]})
    assert [m["content"] for m in fake_openai.requests[1]["messages"]].count("Operator rules.") == 1


async def test_per_provider_prompt_override(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy(system_prompt="general", chatgpt_system_prompt="for chatgpt")
    await client.post("/chatgpt/", json={"messages": [USER]})
    assert fake_openai.requests[0]["messages"][0]["content"] == "for chatgpt"


async def test_off_mode_sends_the_conversation_as_is(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy(system_prompt_mode="off")
    body = await (await client.post("/chatgpt/", json={"messages": [USER]})).json()
    assert fake_openai.requests[0]["messages"] == [USER]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
