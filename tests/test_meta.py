"""Health, readiness, status and the model lists."""

from __future__ import annotations

from tests.conftest import Proxy
from tests.fakes.openai_server import FakeOpenAI


async def test_health_is_cheap_and_never_touches_upstreams(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    resp = await client.get("/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
    assert not fake_openai.requests and fake_openai.models_calls == 0


async def test_ready_with_a_configured_provider(proxy: Proxy) -> None:
    client = await proxy()
    resp = await client.get("/ready")
    assert resp.status == 200
    assert (await resp.json())["providers"] == {"chatgpt": "ok"}


async def test_not_ready_without_any_provider(proxy: Proxy) -> None:
    client = await proxy(openai_api_key=None, openai_base_url="https://api.openai.com/v1")
    resp = await client.get("/ready")
    assert resp.status == 503
    assert "no provider" in (await resp.json())["providers"]["server"]


async def test_status_lists_every_provider(proxy: Proxy) -> None:
    client = await proxy(openai_model="gpt-4o")
    body = await (await client.get("/status")).json()
    chatgpt = body["providers"]["chatgpt"]
    assert chatgpt["configured"] is True and chatgpt["default_model"] == "gpt-4o"
    assert chatgpt["in_flight"] == 0
    assert set(body["providers"]) == {"chatgpt", "gigachat", "ernie", "local"}
    assert body["providers"]["gigachat"]["configured"] is False


async def test_models_are_listed_and_cached(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy()
    body = await (await client.get("/models")).json()
    assert body["object"] == "list"
    ids = [card["id"] for card in body["data"]]
    assert ids == ["chatgpt/gpt-4o", "chatgpt/gpt-4o-mini"]
    assert body["data"][0]["provider"] == "chatgpt" and body["data"][0]["model"] == "gpt-4o"
    own = await (await client.get("/chatgpt/models")).json()
    assert own["models"] == ["gpt-4o", "gpt-4o-mini"]
    assert fake_openai.models_calls == 1, "the upstream list is cached"


async def test_models_cache_expires(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    client = await proxy(models_cache_ttl=0)
    await client.get("/chatgpt/models")
    await client.get("/chatgpt/models")
    assert fake_openai.models_calls == 2


async def test_provider_models_of_an_unconfigured_provider(proxy: Proxy) -> None:
    client = await proxy()
    assert (await client.get("/gigachat/models")).status == 503
    assert (await client.get("/bard/models")).status == 404


async def test_models_survive_a_failing_upstream_list(proxy: Proxy) -> None:
    client = await proxy(openai_base_url="http://127.0.0.1:9/v1", upstream_retries=0)
    body = await (await client.get("/models")).json()
    assert [card["id"] for card in body["data"]] == ["chatgpt/gpt-4o-mini"]


async def test_status_hides_credentials_written_into_a_base_url(proxy: Proxy) -> None:
    client = await proxy(openai_base_url="http://user:hunter2@127.0.0.1:9/v1")
    text = await (await client.get("/status")).text()
    assert "hunter2" not in text and "127.0.0.1:9/v1" in text


def test_env_example_documents_every_setting() -> None:
    from pathlib import Path

    from chatproxy.config import Settings

    text = (Path(__file__).parent.parent / ".env.example").read_text()
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in text]
    assert not missing
