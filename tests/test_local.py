"""The local provider against tiny Qwen2 and Llama models, through the real app."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatproxy.keys import PROVIDERS
from chatproxy.local.client import LocalClient
from tests.conftest import AiohttpClient, Client, make_settings, serve
from tests.sse_client import read_events
from tests.tiny_models import build_model

pytest.importorskip("torch")
pytest.importorskip("transformers")

USER = {"role": "user", "content": "hello world"}
PROMPTS = [
    "hi",
    "the quick brown fox jumps over the lazy dog and then",
    "how are you today",
    "Привет! Как дела у тебя сегодня, друг?",
]


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("qwen") / "tiny-qwen2", "qwen2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("llama") / "tiny-llama", "llama")


async def start(
    aiohttp_client: AiohttpClient, model: Path | str, *, wait: bool = True, **overrides: Any
) -> Client:
    client = await serve(aiohttp_client, make_settings(local_model=str(model), **overrides))
    if wait:
        await wait_ready(client)
    return client


async def wait_ready(client: Client, seconds: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        resp = await client.get("/ready")
        body: dict[str, Any] = await resp.json()
        if resp.status == 200 or "loading" not in body["providers"].get("local", "loading"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError("the local model did not finish loading")


async def local_status(client: Client) -> dict[str, Any]:
    status: dict[str, Any] = (await (await client.get("/status")).json())["providers"]["local"]
    return status


async def eventually(
    read: Callable[[], Awaitable[dict[str, Any]]],
    check: Callable[[dict[str, Any]], bool],
    seconds: float = 10,
) -> None:
    """Poll `read` until `check` holds, failing after `seconds`."""
    for _ in range(int(seconds / 0.02)):
        if check(await read()):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def ask(client: Client, content: str, **extra: Any) -> dict[str, Any]:
    resp = await client.post(
        "/local/",
        json={"messages": [{"role": "user", "content": content}], "temperature": 0, **extra},
    )
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


@pytest.mark.parametrize("family", ["qwen", "llama"])
async def test_reply(
    aiohttp_client: AiohttpClient, tiny_qwen: Path, tiny_llama: Path, family: str
) -> None:
    model = tiny_qwen if family == "qwen" else tiny_llama
    client = await start(aiohttp_client, model)
    body = await ask(client, "hello world", max_tokens=8)
    assert body["model"] == model.name
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant"]
    assert isinstance(body["messages"][-1]["content"], str)
    usage = body["usage"]
    assert usage["prompt_tokens"] > 5 and 1 <= usage["completion_tokens"] <= 8
    assert body["finish_reason"] in ("stop", "length")
    again = await ask(client, "hello world", max_tokens=8)
    assert again["messages"][-1] == body["messages"][-1], "greedy decoding is deterministic"


async def test_greedy_batched_output_equals_one_at_a_time(
    aiohttp_client: AiohttpClient, tiny_qwen: Path
) -> None:
    client = await start(aiohttp_client, tiny_qwen, local_batch_window_ms=500)
    batched = await asyncio.gather(*(ask(client, p, max_tokens=12) for p in PROMPTS))
    status = await local_status(client)
    assert status["largest_batch"] == len(PROMPTS), "all four ran in one generate call"
    alone = [await ask(client, p, max_tokens=12) for p in PROMPTS]
    assert status["largest_batch"] == len(PROMPTS)
    for together, single in zip(batched, alone, strict=True):
        assert together["messages"][-1] == single["messages"][-1]
        assert together["usage"] == single["usage"]


async def test_sampling_parameters_stay_per_request(
    aiohttp_client: AiohttpClient, tiny_qwen: Path
) -> None:
    client = await start(aiohttp_client, tiny_qwen, local_batch_window_ms=300)
    greedy, sampled = await asyncio.gather(
        ask(client, "hi", max_tokens=6), ask(client, "hi", max_tokens=6, temperature=1.0)
    )
    assert greedy["usage"]["completion_tokens"] >= 1
    status = await local_status(client)
    assert status["requests_served"] == 2
    assert status["largest_batch"] == 1, "different sampling never shares a generate call"
    assert sampled["finish_reason"] in ("stop", "length")


async def test_streams_stay_per_request_inside_one_batch(
    aiohttp_client: AiohttpClient, tiny_qwen: Path
) -> None:
    client = await start(aiohttp_client, tiny_qwen, local_batch_window_ms=400)

    async def stream(content: str) -> list[tuple[str, Any]]:
        resp = await client.post(
            "/local/",
            json={
                "messages": [{"role": "user", "content": content}],
                "temperature": 0,
                "max_tokens": 10,
                "stream": True,
            },
        )
        return await read_events(resp)

    results = await asyncio.gather(*(stream(p) for p in PROMPTS[:3]))
    assert (await local_status(client))["largest_batch"] == 3
    for prompt, events in zip(PROMPTS[:3], results, strict=True):
        assert events[-1][0] == "done"
        text = "".join(data["content"] for name, data in events if name == "delta")
        assert events[-1][1]["messages"][-1]["content"] == text
        assert text == (await ask(client, prompt, max_tokens=10))["messages"][-1]["content"]


class Gate:
    """Holds the worker inside `generate` until the test lets it go."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from chatproxy.local import generation

        self.entered = threading.Event()
        self.release = threading.Event()
        real = generation.generate

        def gated(*args: Any, **kwargs: Any) -> None:
            self.entered.set()
            self.release.wait(30)
            real(*args, **kwargs)

        monkeypatch.setattr(generation, "generate", gated)


async def test_queue_full_is_429_with_retry_after(
    aiohttp_client: AiohttpClient, tiny_qwen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(monkeypatch)
    client = await start(aiohttp_client, tiny_qwen, local_max_queue=1, local_max_batch=1)
    first = asyncio.ensure_future(ask(client, "hi", max_tokens=3))
    await asyncio.to_thread(gate.entered.wait, 10)  # the worker holds the first request
    second = asyncio.ensure_future(ask(client, "hi", max_tokens=3))
    await eventually(lambda: local_status(client), lambda s: s["queue_depth"] >= 1)
    resp = await client.post("/local/", json={"messages": [USER]})
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert "queue is full" in (await resp.json())["error"]
    gate.release.set()
    assert (await first)["usage"]["completion_tokens"] >= 1
    assert (await second)["usage"]["completion_tokens"] >= 1


async def test_disconnect_cancels_generation_and_frees_the_worker(
    aiohttp_client: AiohttpClient, tiny_qwen: Path
) -> None:
    client = await start(aiohttp_client, tiny_qwen, local_batch_window_ms=300)

    async def partner() -> dict[str, Any]:
        return await ask(client, "how are you today", max_tokens=60)

    keeps_going = asyncio.ensure_future(partner())
    resp = await client.post(
        "/local/", json={"messages": [USER], "temperature": 0, "max_tokens": 200, "stream": True}
    )
    assert (await resp.content.readline()).startswith(b"event: delta")
    resp.close()
    await eventually(lambda: local_status(client), lambda s: s["requests_cancelled"] >= 1)
    survivor = await keeps_going
    assert survivor["usage"]["completion_tokens"] >= 1, "the rest of the batch went on"
    status = await local_status(client)
    assert status["tokens_generated"] < 200 + 60
    assert (await ask(client, "hi", max_tokens=3))["usage"]["completion_tokens"] >= 1


async def test_cancelled_request_stops_within_a_few_steps(
    aiohttp_client: AiohttpClient, tiny_qwen: Path
) -> None:
    client = await start(aiohttp_client, tiny_qwen)
    local = client.app[PROVIDERS].clients["local"]
    assert isinstance(local, LocalClient)
    from chatproxy.clients.base import CompletionRequest
    from chatproxy.schemas import Message

    request = CompletionRequest(
        model="x", messages=[Message(role="user", content="hi")], temperature=0, max_tokens=100_000
    )
    stream = local.stream(request)
    await anext(stream)
    await stream.aclose()  # what a disconnect or a cancelled task does
    engine = local.engine
    await eventually(lambda: local_status(client), lambda s: s["requests_cancelled"] >= 1)
    assert engine.tokens_generated < 120


async def test_long_conversations_are_trimmed_not_failed(
    aiohttp_client: AiohttpClient, tiny_qwen: Path
) -> None:
    client = await start(aiohttp_client, tiny_qwen)
    history: list[dict[str, str]] = []
    for turn in range(30):
        history += [
            {"role": "user", "content": f"question {turn} about the lazy dog"},
            {"role": "assistant", "content": "the quick brown fox " * 3},
        ]
    history.append({"role": "user", "content": "and now?"})
    resp = await client.post(
        "/local/", json={"messages": history, "max_tokens": 16, "temperature": 0}
    )
    assert resp.status == 200
    usage = (await resp.json())["usage"]
    assert usage["prompt_tokens"] <= 256 - 16, "fits the 256-token context"


async def test_status_reports_the_model(aiohttp_client: AiohttpClient, tiny_qwen: Path) -> None:
    client = await start(aiohttp_client, tiny_qwen)
    await ask(client, "hi", max_tokens=4)
    status = await local_status(client)
    assert status["configured"] is True and status["ready"] is True
    assert status["device"] == "cpu" and status["dtype"] == "float32"
    assert status["parameters"] > 10_000 and status["memory_allocated"] > 10_000_000
    assert status["requests_served"] == 1 and status["tokens_generated"] >= 1
    assert {"queue_depth", "batch_size", "tokens_per_s", "context_length"} <= set(status)


async def test_openai_route_and_models(aiohttp_client: AiohttpClient, tiny_qwen: Path) -> None:
    client = await start(aiohttp_client, tiny_qwen)
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": "local/anything", "messages": [USER], "max_tokens": 4, "temperature": 0},
    )
    assert resp.status == 200
    assert (await resp.json())["object"] == "chat.completion"
    ids = [m["id"] for m in (await (await client.get("/v1/models")).json())["data"]]
    assert ids == ["local/tiny-qwen2"]


async def test_ready_is_503_while_loading_then_200(
    aiohttp_client: AiohttpClient, tiny_qwen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatproxy.local import loader

    loaded = threading.Event()
    real_load = loader.load

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        loaded.wait(30)
        return real_load(*args, **kwargs)

    monkeypatch.setattr("chatproxy.local.engine.load", slow_load)
    client = await start(aiohttp_client, tiny_qwen, wait=False)
    resp = await client.get("/ready")
    assert resp.status == 503
    assert "loading" in (await resp.json())["providers"]["local"]
    chat = await client.post("/local/", json={"messages": [USER]})
    assert chat.status == 503 and "loading" in (await chat.json())["error"]
    loaded.set()
    await wait_ready(client)
    assert (await client.get("/ready")).status == 200


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        ("no_weights", "has no weights"),
        ("no_template", "no chat template"),
        ("hub_offline", "hub did not provide it"),
    ],
)
async def test_load_errors_are_clear(
    aiohttp_client: AiohttpClient,
    tiny_qwen: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setup: str,
    fragment: str,
) -> None:
    model: str
    if setup == "no_weights":
        (tmp_path / "empty").mkdir()
        model = str(tmp_path / "empty")
    elif setup == "no_template":
        import shutil

        copy = tmp_path / "copy"
        shutil.copytree(tiny_qwen, copy)
        (copy / "chat_template.jinja").unlink()
        model = str(copy)
    else:
        # What HF_HUB_OFFLINE=1 in the environment does, read when the hub library loads.
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
        model = "nobody/no-such-model-xyz"
    client = await start(aiohttp_client, model, wait=False)
    body = await wait_ready(client)
    assert fragment in body["providers"]["local"]
    resp = await client.post("/local/", json={"messages": [USER]})
    assert resp.status == 503
    assert fragment in (await resp.json())["error"]


async def test_missing_packages_name_the_install_command(
    aiohttp_client: AiohttpClient, tiny_qwen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("chatproxy.local.loader.missing_packages", lambda: ["torch"])
    client = await start(aiohttp_client, tiny_qwen, wait=False)
    resp = await client.post("/local/", json={"messages": [USER]})
    assert resp.status == 503
    assert "make install-local" in (await resp.json())["error"]


def test_presets_expand_to_hub_ids() -> None:
    assert make_settings(local_model="qwen").local_model == "Qwen/Qwen2.5-7B-Instruct"
    assert make_settings(local_model="llama").local_model == "meta-llama/Llama-3.1-8B-Instruct"
    assert make_settings(local_model="").local_model is None


NO_HEAVY_MODULES = """
import asyncio, sys
import aiohttp
from aiohttp import web
from chatproxy.app import create_app
from chatproxy.keys import PROVIDERS
from chatproxy.local.client import LocalClient
from chatproxy.config import Settings

async def main() -> None:
    runner = web.AppRunner(create_app(Settings(_env_file=None, openai_api_key="sk-x")))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        for path in ("/health", "/ready", "/status", "/models"):
            async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                await resp.read()
        async with session.post(f"http://127.0.0.1:{port}/local/", json={}) as resp:
            assert resp.status in (400, 503)
    await runner.cleanup()

asyncio.run(main())
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""


def test_server_without_local_model_never_imports_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_HEAVY_MODULES],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    assert result.stdout.strip() == "[]"


async def test_a_template_that_refuses_the_conversation_is_a_400(
    aiohttp_client: AiohttpClient, tiny_qwen: Path, tmp_path: Path
) -> None:
    import shutil

    strict = tmp_path / "strict"
    shutil.copytree(tiny_qwen, strict)
    template = (strict / "chat_template.jinja").read_text()
    (strict / "chat_template.jinja").write_text(
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}" + template
    )
    client = await start(aiohttp_client, strict)
    resp = await client.post("/local/", json={"messages": [USER]})
    assert resp.status == 400
    assert "System role not supported" in (await resp.json())["error"]


async def test_a_client_giving_up_on_a_plain_request_cancels_it(
    aiohttp_client: AiohttpClient, tiny_qwen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(monkeypatch)  # the worker cannot finish before the client gives up
    client = await start(aiohttp_client, tiny_qwen)
    with pytest.raises(asyncio.TimeoutError):
        await client.post(
            "/local/",
            json={"messages": [USER], "temperature": 0, "max_tokens": 100},
            timeout=aiohttp.ClientTimeout(total=0.5),
        )
    assert gate.entered.is_set()
    gate.release.set()
    await eventually(lambda: local_status(client), lambda s: s["requests_cancelled"] >= 1)
    status = await local_status(client)
    assert status["tokens_generated"] <= 2, "stopped at the first step"


async def stream_text(
    client: Client, content: str, max_tokens: int, started: asyncio.Event | None = None
) -> tuple[str, float]:
    """Stream one greedy reply; return its text and when its last byte arrived. `started`
    is set once the first delta is in, i.e. once the request is being generated."""
    resp = await client.post(
        "/local/",
        json={
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
            "max_tokens": max_tokens,
            "stream": True,
        },
    )
    if started is not None:
        started.set()  # headers come with the first delta
    events = await read_events(resp)
    assert events[-1][0] == "done", events[-1]
    return events[-1][1]["messages"][-1]["content"], time.monotonic()


@pytest.mark.parametrize("continuous", [True, False])
async def test_late_requests_join_a_running_batch(
    aiohttp_client: AiohttpClient, tiny_qwen: Path, continuous: bool
) -> None:
    client = await start(aiohttp_client, tiny_qwen, local_continuous_batching=continuous)
    long_prompt, late = "the quick brown fox", ["hello world", "how are you today"]
    alone_long = await ask(client, long_prompt, max_tokens=100)
    assert alone_long["finish_reason"] == "length", "the long request runs its full length"
    alone_late = [(await ask(client, p, max_tokens=10))["messages"][-1]["content"] for p in late]

    generating = asyncio.Event()
    running = asyncio.ensure_future(stream_text(client, long_prompt, 100, generating))
    await asyncio.wait_for(generating.wait(), 10)
    joined = await asyncio.gather(*(stream_text(client, p, 10) for p in late))
    long_text, long_done = await running

    status = await local_status(client)
    assert long_text == alone_long["messages"][-1]["content"], "joining changed no output"
    assert [text for text, _ in joined] == alone_late
    if continuous:
        assert status["rejoins"] >= 1
        assert all(done < long_done for _, done in joined), "late requests did not wait"
    else:
        assert status["rejoins"] == 0
        assert all(done > long_done for _, done in joined), "they waited for the batch"
