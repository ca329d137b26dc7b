"""`/v1/embeddings` through the official openai SDK, for every provider, against fakes."""

from __future__ import annotations

import asyncio
import base64
import struct
from pathlib import Path
from typing import Any

import openai
import pytest

from chatproxy.embeddings.registry import LOCAL_EMBEDDINGS
from tests.conftest import (
    AiohttpClient,
    AiohttpServer,
    Client,
    ernie_settings,
    gigachat_settings,
    make_settings,
    openai_settings,
    serve,
    started,
)
from tests.fakes.embeddings import (
    DIMENSIONS,
    EmbeddingErnie,
    EmbeddingGigaChat,
    EmbeddingOpenAI,
    fake_vector,
)

TEXTS = ["первый текст", "second text", "第三"]


@pytest.fixture
async def fakes(
    aiohttp_server: AiohttpServer,
) -> tuple[EmbeddingOpenAI, EmbeddingGigaChat, EmbeddingErnie]:
    fake_openai = EmbeddingOpenAI()
    server = await aiohttp_server(fake_openai.app())
    fake_openai.base_url = str(server.make_url("/v1"))
    giga = await started(aiohttp_server, EmbeddingGigaChat())
    ernie = await started(aiohttp_server, EmbeddingErnie())
    return fake_openai, giga, ernie


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, fakes: tuple[EmbeddingOpenAI, EmbeddingGigaChat, EmbeddingErnie]
) -> Client:
    fake_openai, giga, ernie = fakes
    values = {**gigachat_settings(giga), **ernie_settings(ernie)}
    return await serve(aiohttp_client, openai_settings(fake_openai, **values))


def sdk(client: Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=str(client.make_url("/v1")), api_key="k", max_retries=0)


def floats_of(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@pytest.mark.parametrize(
    "model", ["chatgpt/text-embedding-3-small", "gigachat/Embeddings", "ernie/embedding-v1"]
)
async def test_sync_sdk_floats_are_what_the_upstream_returned(client: Client, model: str) -> None:
    def call() -> Any:
        with sdk(client) as api:
            return api.embeddings.create(model=model, input=TEXTS, encoding_format="float")

    answer = await asyncio.to_thread(call)
    assert [item.embedding for item in answer.data] == [fake_vector(t) for t in TEXTS]
    assert [item.index for item in answer.data] == [0, 1, 2]
    assert answer.model == model
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == 5


@pytest.mark.parametrize(
    "model", ["openai/text-embedding-3-small", "gigachat/", "ernie/embedding-v1", "Embeddings"]
)
async def test_async_sdk_default_base64_decodes_to_the_same_vectors(
    client: Client, model: str
) -> None:
    """The SDK asks for base64 unless told otherwise, and decodes it itself."""
    async with openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key="k", max_retries=0
    ) as api:
        answer = await api.embeddings.create(model=model, input="один текст")
    assert answer.data[0].embedding == fake_vector("один текст")


async def test_base64_is_little_endian_float32(client: Client) -> None:
    resp = await client.post(
        "/v1/embeddings",
        json={"model": "gigachat/Embeddings", "input": TEXTS, "encoding_format": "base64"},
    )
    body = await resp.json()
    assert resp.status == 200, body
    for item, text in zip(body["data"], TEXTS, strict=True):
        assert len(base64.b64decode(item["embedding"])) == 4 * DIMENSIONS
        assert floats_of(item["embedding"]) == fake_vector(text)


async def test_ernie_batches_of_sixteen_in_order(
    client: Client, fakes: tuple[EmbeddingOpenAI, EmbeddingGigaChat, EmbeddingErnie]
) -> None:
    texts = [f"text {i}" for i in range(40)]
    resp = await client.post("/v1/embeddings", json={"model": "ernie/embedding-v1", "input": texts})
    body = await resp.json()
    assert resp.status == 200, body
    assert [item["embedding"] for item in body["data"]] == [fake_vector(t) for t in texts]
    calls = fakes[2].embedding_calls
    assert sorted(len(b["input"]) for _, b in calls) == [8, 16, 16]
    assert {endpoint for endpoint, _ in calls} == {"embedding-v1"}
    assert body["usage"]["prompt_tokens"] == 80


async def test_gigachat_splits_large_requests(
    client: Client, fakes: tuple[EmbeddingOpenAI, EmbeddingGigaChat, EmbeddingErnie]
) -> None:
    texts = [f"t{i}" for i in range(250)]
    resp = await client.post(
        "/v1/embeddings", json={"model": "gigachat/Embeddings", "input": texts}
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert [item["embedding"] for item in body["data"]] == [fake_vector(t) for t in texts]
    assert sorted(len(b["input"]) for b in fakes[1].embedding_calls) == [70, 90, 90]


async def test_gigachat_token_expiry_is_renewed(
    client: Client, fakes: tuple[EmbeddingOpenAI, EmbeddingGigaChat, EmbeddingErnie]
) -> None:
    giga = fakes[1]
    payload = {"model": "gigachat/Embeddings", "input": "x"}
    assert (await client.post("/v1/embeddings", json=payload)).status == 200
    giga.revoke_all()
    resp = await client.post("/v1/embeddings", json=payload)
    assert resp.status == 200, await resp.text()
    assert giga.token_requests == 2 and giga.rejected_tokens == 1


async def test_an_ernie_input_over_its_character_limit_is_refused_before_any_call(
    client: Client, fakes: tuple[EmbeddingOpenAI, EmbeddingGigaChat, EmbeddingErnie]
) -> None:
    resp = await client.post(
        "/v1/embeddings", json={"model": "ernie/embedding-v1", "input": ["ok", "x" * 1001]}
    )
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["param"] == "input"
    assert "input.1" in error["message"] and "1000" in error["message"]
    assert fakes[2].embedding_calls == []


async def test_an_input_gigachat_finds_too_long_is_a_400_naming_input(client: Client) -> None:
    def call() -> None:
        with sdk(client) as api:
            api.embeddings.create(model="gigachat/Embeddings", input="word " * 500)

    with pytest.raises(openai.BadRequestError) as caught:
        await asyncio.to_thread(call)
    assert caught.value.param == "input"
    assert "Tokens limit exceeded" in caught.value.message


async def test_token_arrays_go_to_openai_only(
    client: Client, fakes: tuple[EmbeddingOpenAI, EmbeddingGigaChat, EmbeddingErnie]
) -> None:
    resp = await client.post(
        "/v1/embeddings", json={"model": "chatgpt/text-embedding-3-small", "input": [[1, 2, 3]]}
    )
    assert resp.status == 200
    assert fakes[0].embedding_calls[0]["input"] == [[1, 2, 3]]
    flat = await client.post(
        "/v1/embeddings", json={"model": "chatgpt/text-embedding-3-small", "input": [5, 6]}
    )
    assert (await flat.json())["data"][0]["embedding"] == fake_vector([5, 6])
    for model in ("gigachat/Embeddings", "ernie/embedding-v1"):
        resp = await client.post("/v1/embeddings", json={"model": model, "input": [1, 2]})
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["param"] == "input"
        assert "text only" in error["message"]


async def test_dimensions_where_the_provider_takes_them(
    client: Client, fakes: tuple[EmbeddingOpenAI, EmbeddingGigaChat, EmbeddingErnie]
) -> None:
    def call(model: str) -> Any:
        with sdk(client) as api:
            return api.embeddings.create(
                model=model, input="x", dimensions=4, encoding_format="float"
            )

    answer = await asyncio.to_thread(call, "chatgpt/text-embedding-3-small")
    assert answer.data[0].embedding == fake_vector("x", 4)
    with pytest.raises(openai.BadRequestError) as caught:
        await asyncio.to_thread(call, "gigachat/Embeddings")
    assert caught.value.param == "dimensions"


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        ({"model": "nope/x", "input": "a"}, 404, "model"),
        ({"model": "ernie/../chat/x", "input": "a"}, 400, "model"),
        ({"model": "gigachat/Embeddings", "input": []}, 400, "input"),
        ({"model": "gigachat/Embeddings", "input": ["a", ""]}, 400, "input"),
        ({"model": "gigachat/Embeddings", "input": "a", "encoding_format": "hex"}, 400, None),
        ({"model": "local/x", "input": "a"}, 404, "model"),
    ],
)
async def test_clear_refusals(
    client: Client, payload: dict[str, Any], status: int, param: str | None
) -> None:
    resp = await client.post("/v1/embeddings", json=payload)
    error = (await resp.json())["error"]
    assert resp.status == status, error
    if param is not None:
        assert error["param"] == param
    if status == 404:
        assert error["code"] == "model_not_found"


async def test_local_embeddings_are_off_unless_named(client: Client) -> None:
    resp = await client.post("/v1/embeddings", json={"model": "local/", "input": "a"})
    assert resp.status == 404


# The local model: a tiny Qwen2 built by the test, mean-pooled on its worker thread.


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.tiny_models import build_model

    return build_model(tmp_path_factory.mktemp("embed") / "tiny-qwen2", "qwen2", context=64)


def reference_vectors(folder: Path, texts: list[str]) -> list[list[float]]:
    """Mean pooling, one text at a time (no padding involved), straight from transformers."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    out = []
    with torch.inference_mode():
        for text in texts:
            batch = tokenizer([text], return_tensors="pt")
            out.append(model(**batch).last_hidden_state[0].mean(dim=0).tolist())
    return out


@pytest.mark.local
async def test_local_embeddings_mean_pool_in_batches(
    aiohttp_client: AiohttpClient, tiny_model: Path
) -> None:
    settings = make_settings(local_embedding_model=str(tiny_model), local_max_batch=2)
    client = await serve(aiohttp_client, settings)
    model = client.app[LOCAL_EMBEDDINGS]
    for _ in range(300):
        if model.not_ready_reason() is None:
            break
        await asyncio.sleep(0.1)
    texts = ["hello world", "the quick brown fox jumps over the lazy dog", "a proxy"]
    async with openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key="k", max_retries=0
    ) as api:
        answers = await asyncio.gather(
            api.embeddings.create(model="local/", input=texts, encoding_format="float"),
            api.embeddings.create(model=str(tiny_model), input=texts[:1]),
        )
    expected = reference_vectors(tiny_model, texts)
    for got, want in zip([d.embedding for d in answers[0].data], expected, strict=True):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert answers[1].data[0].embedding == pytest.approx(expected[0], rel=1e-4, abs=1e-5)
    assert answers[0].usage.prompt_tokens > 3
    too_long = await client.post(
        "/v1/embeddings", json={"model": "local/", "input": "hello world " * 100}
    )
    error = (await too_long.json())["error"]
    assert too_long.status == 400 and error["param"] == "input" and "64" in error["message"]


async def test_openai_answers_in_the_clients_format_and_it_passes_through(
    client: Client, fakes: tuple[EmbeddingOpenAI, EmbeddingGigaChat, EmbeddingErnie]
) -> None:
    fake_openai = fakes[0]
    for encoding in ("base64", "float"):
        resp = await client.post(
            "/v1/embeddings",
            json={
                "model": "chatgpt/text-embedding-3-small",
                "input": "x",
                "encoding_format": encoding,
            },
        )
        item = (await resp.json())["data"][0]["embedding"]
        assert fake_openai.embedding_calls[-1]["encoding_format"] == encoding
        assert (floats_of(item) if encoding == "base64" else item) == fake_vector("x")
    fake_openai.encoding = "base64"  # an upstream that answers base64 to a float request
    resp = await client.post(
        "/v1/embeddings", json={"model": "chatgpt/text-embedding-3-small", "input": "x"}
    )
    assert (await resp.json())["data"][0]["embedding"] == fake_vector("x")


async def test_a_malformed_upstream_vector_is_a_502(
    client: Client, fakes: tuple[EmbeddingOpenAI, EmbeddingGigaChat, EmbeddingErnie]
) -> None:
    for bad in (["a", "b"], "not base64!", {"x": 1}):
        fakes[0].vector_override = bad
        resp = await client.post(
            "/v1/embeddings", json={"model": "chatgpt/text-embedding-3-small", "input": "x"}
        )
        assert resp.status == 502, bad
        assert "embedding" in (await resp.json())["error"]["message"]
