"""`GET /v1/models/{id}` with slashes in the id, and strict `provider/model` routing."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from tests.conftest import Client, Proxy
from tests.fakes.openai_server import FakeOpenAI

USER: Any = {"role": "user", "content": "hi"}


def sdk(client: Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=str(client.make_url("/v1")), api_key="k", max_retries=0)


async def test_sync_sdk_retrieves_a_model_whose_id_holds_a_slash(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()

    def call() -> Any:
        with sdk(client) as api:
            return api.models.retrieve("chatgpt/gpt-4o-mini")

    model = await asyncio.to_thread(call)
    assert model.id == "chatgpt/gpt-4o-mini"
    assert model.object == "model" and model.owned_by == "chatgpt"


async def test_async_sdk_retrieve_and_the_openai_alias(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    async with openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key="k", max_retries=0
    ) as api:
        aliased = await api.models.retrieve("openai/gpt-4o")
        bare = await api.models.retrieve("gpt-4o")
    assert aliased.id == bare.id == "chatgpt/gpt-4o"


@pytest.mark.parametrize("path", ["/v1/models/chatgpt/gpt-4o", "/v1/models/chatgpt%2Fgpt-4o"])
async def test_the_slash_may_come_plain_or_encoded(
    proxy: Proxy, fake_openai: FakeOpenAI, path: str
) -> None:
    client = await proxy()
    resp = await client.get(path)
    assert resp.status == 200
    assert (await resp.json())["id"] == "chatgpt/gpt-4o"


@pytest.mark.parametrize("wanted", ["chatgpt/no-such-model", "nope/x", "no-such-model"])
async def test_unknown_models_are_model_not_found(
    proxy: Proxy, fake_openai: FakeOpenAI, wanted: str
) -> None:
    client = await proxy()

    def call() -> None:
        with sdk(client) as api:
            api.models.retrieve(wanted)

    with pytest.raises(openai.NotFoundError) as caught:
        await asyncio.to_thread(call)
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "model_not_found"
    assert wanted in error["message"]


async def test_an_unknown_provider_prefix_is_not_sent_to_the_default_provider(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()

    def call() -> None:
        with sdk(client) as api:
            api.chat.completions.create(model="nope/x", messages=[USER])

    with pytest.raises(openai.NotFoundError) as caught:
        await asyncio.to_thread(call)
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert fake_openai.requests == [], "nothing went upstream"


async def test_names_without_a_provider_still_reach_the_default_provider(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    for model in ("some-unlisted-model", "openai/gpt-4o", "gpt-4o"):
        resp = await client.post("/v1/chat/completions", json={"model": model, "messages": [USER]})
        assert resp.status == 200, await resp.text()
    assert [r["model"] for r in fake_openai.requests] == ["some-unlisted-model", "gpt-4o", "gpt-4o"]


async def test_a_slashed_name_a_provider_serves_whole_is_routed_to_it(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    """vLLM serves `meta-llama/...` names: a provider's own model, not a provider prefix."""
    client = await proxy(openai_model="meta-llama/Llama-3-8B")
    resp = await client.post(
        "/v1/chat/completions", json={"model": "meta-llama/Llama-3-8B", "messages": [USER]}
    )
    assert resp.status == 200, await resp.text()
    assert fake_openai.requests[0]["model"] == "meta-llama/Llama-3-8B"
