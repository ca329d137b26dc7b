"""GET /metrics after known traffic (parsed, not grepped), bounded labels, Server-Timing,
METRICS_REQUIRE_KEY, and several processes' counts adding up in multiprocess mode."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chatproxy.metrics.families import MAX_MODELS
from chatproxy.metrics.local import LocalEngineCollector
from chatproxy.providers import Providers
from tests.conftest import (
    AiohttpClient,
    AiohttpServer,
    Client,
    Proxy,
    make_settings,
    openai_settings,
    serve,
)
from tests.fakes.embeddings import EmbeddingOpenAI
from tests.fakes.gigachat_server import FakeGigaChat
from tests.fakes.openai_server import FakeOpenAI, reply, status, stream

ROOT = Path(__file__).resolve().parent.parent
USER = {"role": "user", "content": "Hi"}
Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(client: Client, **headers: str) -> Samples:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    return parse(await resp.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of `name` whose labels include `labels`; 0 when there is none."""
    found = [
        v for (n, have), v in samples.items() if n == name and set(labels.items()) <= set(have)
    ]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
    return found[0] if found else 0.0


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for n, labels in samples if n == name]


def timing(header: str) -> dict[str, float]:
    """`upstream;dur=12.3, proxy;dur=0.4` as {"upstream": 12.3, "proxy": 0.4}."""
    metrics = {}
    for entry in header.split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        assert re.fullmatch(r"[a-z-]+", name), header
        durations = [p.removeprefix("dur=") for p in params if p.startswith("dur=")]
        assert len(durations) == 1, header
        metrics[name] = float(durations[0])
    return metrics


def slow_reply(seconds: float) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def behave(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await reply()(request)

    return behave


async def test_a_plain_chat_is_counted_with_its_tokens_and_latencies(proxy: Proxy) -> None:
    client = await proxy()
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    assert resp.status == 200
    samples = await scrape(client)
    labels = {"route": "/chatgpt/", "provider": "chatgpt", "model": "gpt-4o-mini"}
    assert value(samples, "chatproxy_requests_total", status="200", **labels) == 1
    assert value(samples, "chatproxy_tokens_total", provider="chatgpt", direction="in") == 7
    assert value(samples, "chatproxy_tokens_total", provider="chatgpt", direction="out") == 3
    upstream = {"provider": "chatgpt", "model": "gpt-4o-mini", "outcome": "ok"}
    assert value(samples, "chatproxy_upstream_duration_seconds_count", **upstream) == 1
    for name in ("chatproxy_request_duration_seconds", "chatproxy_proxy_duration_seconds"):
        assert value(samples, f"{name}_count", route="/chatgpt/", provider="chatgpt") == 1
        assert value(samples, f"{name}_bucket", route="/chatgpt/", provider="chatgpt", le="+Inf")
    whole = value(samples, "chatproxy_request_duration_seconds_sum", route="/chatgpt/")
    own = value(samples, "chatproxy_proxy_duration_seconds_sum", route="/chatgpt/")
    call = value(samples, "chatproxy_upstream_duration_seconds_sum", **upstream)
    assert 0 < own < whole and own == pytest.approx(whole - call)
    # A plain chat opened no stream; the scrape itself is a request too, counted once done.
    assert not series(samples, "chatproxy_upstream_first_byte_seconds_count")
    samples = await scrape(client)
    assert value(samples, "chatproxy_requests_total", route="/metrics", provider="none") == 1


async def test_every_name_is_prefixed_and_named_as_prometheus_asks(proxy: Proxy) -> None:
    client = await proxy()
    await client.post("/chatgpt/", json={"messages": [USER]})
    resp = await client.get("/metrics")
    families = list(text_string_to_metric_families(await resp.text()))
    assert families
    for family in families:
        assert family.name.startswith("chatproxy_"), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name


async def test_a_stream_is_counted_in_flight_then_with_its_usage(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    fake_openai.queue(stream(["Hel", "lo"], stall_after=1))  # one delta, then silence
    body = {"messages": [USER], "stream": True}
    held = await client.post("/chatgpt/", json=body)
    assert held.status == 200
    assert "first byte" in held.headers["Server-Timing"]
    assert timing(held.headers["Server-Timing"])["upstream"] >= 0
    samples = await scrape(client)
    assert value(samples, "chatproxy_streams_in_flight", provider="chatgpt") == 1
    held.close()  # the client leaves mid-stream
    for _ in range(200):
        samples = await scrape(client)
        if value(samples, "chatproxy_streams_in_flight", provider="chatgpt") == 0:
            break
        await asyncio.sleep(0.01)
    assert value(samples, "chatproxy_streams_in_flight", provider="chatgpt") == 0

    fake_openai.queue(stream(["a", "b", "c"]))
    resp = await client.post("/chatgpt/", json=body)
    await resp.read()
    samples = await scrape(client)
    assert value(samples, "chatproxy_tokens_total", provider="chatgpt", direction="in") == 5
    assert value(samples, "chatproxy_tokens_total", provider="chatgpt", direction="out") == 3
    first_byte = value(samples, "chatproxy_upstream_first_byte_seconds_count", provider="chatgpt")
    assert first_byte == 2, "both streams had their first delta"
    ok = {"provider": "chatgpt", "model": "gpt-4o-mini"}
    assert value(samples, "chatproxy_upstream_duration_seconds_count", outcome="ok", **ok) == 1
    assert value(samples, "chatproxy_upstream_duration_seconds_count", outcome="error", **ok) == 1
    assert value(samples, "chatproxy_requests_total", route="/chatgpt/", status="200") == 1
    assert value(samples, "chatproxy_requests_total", route="/chatgpt/", status="499") == 1


async def test_an_upstream_5xx_retried_is_counted_by_cause(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy(upstream_retries=2)
    fake_openai.queue(status(503), status(502))
    assert (await client.post("/chatgpt/", json={"messages": [USER]})).status == 200
    fake_openai.queue(status(500), status(500), status(500))
    body = {"model": "gpt-4o-mini", "messages": [USER]}
    assert (await client.post("/v1/chat/completions", json=body)).status == 502
    samples = await scrape(client)
    retries = "chatproxy_upstream_retries_total"
    assert value(samples, retries, provider="chatgpt", cause="http_503") == 1
    assert value(samples, retries, provider="chatgpt", cause="http_502") == 1
    assert value(samples, retries, provider="chatgpt", cause="http_500") == 2
    failed = {"route": "/v1/chat/completions", "provider": "chatgpt", "model": "gpt-4o-mini"}
    assert value(samples, "chatproxy_requests_total", status="502", **failed) == 1
    assert value(samples, "chatproxy_upstream_duration_seconds_count", outcome="error") == 1


async def test_token_fetches_and_refreshes_are_counted_per_provider(
    giga_proxy: Proxy, fake_gigachat: FakeGigaChat
) -> None:
    fake_gigachat.token_ttl = 4.0  # inside the hard margin: the next call refreshes first
    client = await giga_proxy()
    assert (await client.post("/gigachat/", json={"messages": [USER]})).status == 200
    fake_gigachat.token_ttl = 1800.0
    assert (await client.post("/gigachat/", json={"messages": [USER]})).status == 200
    fake_gigachat.revoke_all()  # rejected: dropped, and a new one fetched
    assert (await client.post("/gigachat/", json={"messages": [USER]})).status == 200
    samples = await scrape(client)
    fetches = "chatproxy_token_fetches_total"
    assert value(samples, fetches, provider="gigachat", kind="fetch") == 2
    assert value(samples, fetches, provider="gigachat", kind="refresh") == 1
    assert fake_gigachat.token_requests == 3


async def test_history_store_operations_are_counted_and_timed(proxy: Proxy, tmp_path: Path) -> None:
    client = await proxy(history_store=f"sqlite:///{tmp_path / 'history.db'}")
    cid = f"test-{uuid.uuid4().hex}"
    for _ in range(2):
        body = {"messages": [USER], "conversation_id": cid}
        assert (await client.post("/chatgpt/", json=body)).status == 200
    assert (await client.get(f"/history/{cid}")).status == 200
    samples = await scrape(client)
    ops = "chatproxy_history_operations_total"
    assert value(samples, ops, operation="recall", outcome="ok") == 2
    assert value(samples, ops, operation="create", outcome="ok") == 1
    assert value(samples, ops, operation="append_turn", outcome="ok") == 2
    assert value(samples, ops, operation="messages", outcome="ok") == 1
    failures = [
        v for (n, labels), v in samples.items() if n == ops and ("outcome", "error") in labels
    ]
    assert failures and not any(failures), "failures are counted from 0, none happened"
    timed = "chatproxy_history_operation_duration_seconds_count"
    assert value(samples, timed, operation="append_turn") == 2
    history = {"route": "/history/{conversation_id}", "provider": "none", "status": "200"}
    assert value(samples, "chatproxy_requests_total", **history) == 1


async def test_made_up_models_and_paths_leave_a_bounded_series_count(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()

    async def noise(count: int) -> Samples:
        for _ in range(count):
            word = uuid.uuid4().hex
            # The fake upstream accepts every model; a real one would refuse most.
            body = {"messages": [USER], "model": f"m-{word}"}
            assert (await client.post("/chatgpt/", json=body)).status == 200
            fake_openai.queue(status(404))
            rejected = {"messages": [USER], "model": f"x-{word}"}
            assert (await client.post("/chatgpt/", json=rejected)).status == 400
            assert (await client.get(f"/{word}/{word}")).status in (404, 405)
            assert (await client.get(f"/v1/{word}")).status == 404
            assert (await client.post(f"/{word}/", json=body)).status == 404
        return await scrape(client)

    assert (await client.post("/chatgpt/", json={"messages": [USER]})).status == 200
    await scrape(client)  # so that the first scrape below finds /metrics counted
    first = await noise(MAX_MODELS + 5)
    later = await noise(100)
    assert set(first) == set(later), "later noise added no series"
    models = {labels["model"] for labels in series(later, "chatproxy_requests_total")}
    assert len(models - {"none", "other"}) == MAX_MODELS
    assert "gpt-4o-mini" in models, "the configured model is always its own value"
    routes = {labels["route"] for labels in series(later, "chatproxy_requests_total")}
    assert routes == {"/chatgpt/", "other", "/{provider}/", "/metrics"}


async def test_server_timing_on_plain_answers_and_errors(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    fake_openai.queue(slow_reply(0.05))
    resp = await client.post("/chatgpt/", json={"messages": [USER]})
    parts = timing(resp.headers["Server-Timing"])
    assert set(parts) == {"upstream", "proxy"}
    assert parts["upstream"] >= 50 and 0 <= parts["proxy"] < parts["upstream"]

    health = await client.get("/health")
    assert set(timing(health.headers["Server-Timing"])) == {"proxy"}, "no upstream was called"
    missing = await client.get("/no/such/path")
    assert missing.status == 404 and "proxy;dur=" in missing.headers["Server-Timing"]
    fake_openai.queue(status(400))
    refused = await client.post("/chatgpt/", json={"messages": [USER]})
    assert refused.status == 400
    assert set(timing(refused.headers["Server-Timing"])) == {"upstream", "proxy"}


async def test_metrics_ask_for_a_key_when_keys_are_on(proxy: Proxy) -> None:
    client = await proxy(proxy_api_keys="key-one-1234")
    assert (await client.get("/metrics")).status == 401
    await scrape(client, Authorization="Bearer key-one-1234")


async def test_metrics_require_key_false_opens_them_alone(proxy: Proxy) -> None:
    client = await proxy(proxy_api_keys="key-one-1234", metrics_require_key=False)
    await scrape(client)
    assert (await client.get("/status")).status == 401, "only /metrics is opened"


async def test_metrics_without_keys_need_none(proxy: Proxy) -> None:
    await scrape(await proxy())


def test_local_engine_state_is_read_when_scraped() -> None:
    class Local:
        name = "local"
        default_model = "tiny"

        def status(self) -> dict[str, Any]:
            return {"queue_depth": 3, "batch_size": 2, "tokens_per_s": 41.5, "tokens_generated": 90}

    app = web.Application()
    registry = CollectorRegistry()
    registry.register(LocalEngineCollector(app))
    assert generate_latest(registry) == b"", "nothing before the providers exist"
    providers = Providers(models_ttl=0)
    providers.add(Local())  # type: ignore[arg-type]
    from chatproxy.keys import PROVIDERS

    app[PROVIDERS] = providers
    samples = parse(generate_latest(registry).decode())
    assert value(samples, "chatproxy_local_queue_depth") == 3
    assert value(samples, "chatproxy_local_batch_size") == 2
    assert value(samples, "chatproxy_local_tokens_per_second") == 41.5
    assert value(samples, "chatproxy_local_generated_tokens_total") == 90


WORKER = """
import asyncio, sys
from aiohttp.test_utils import TestClient, TestServer
from chatproxy.app import create_app
from chatproxy.config import Settings

async def main(count):
    async with TestClient(TestServer(create_app(Settings(_env_file=None)))) as client:
        for _ in range(count):
            assert (await client.get("/health")).status == 200

asyncio.run(main(int(sys.argv[1])))
"""


async def test_processes_counts_add_up_in_multiprocess_mode(
    proxy: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(ROOT)}
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, str(count), env=env, stderr=subprocess.PIPE
        )
        for count in (3, 4)
    ]
    for worker in workers:
        _, err = await worker.communicate()
        assert worker.returncode == 0, err.decode()
    assert len(list(folder.glob("counter_*.db"))) == 2, "each process wrote its own file"

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    samples = await scrape(await proxy())
    health = {"route": "/health", "provider": "none", "model": "none", "status": "200"}
    assert value(samples, "chatproxy_requests_total", **health) == 7
    assert value(samples, "chatproxy_request_duration_seconds_count", route="/health") == 7


async def test_a_local_model_reports_its_engine(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.tiny_models import build_model

    model = build_model(tmp_path / "tiny-qwen2", "qwen2")
    client = await serve(aiohttp_client, make_settings(local_model=str(model)))
    for _ in range(300):
        if (await client.get("/ready")).status == 200:
            break
        await asyncio.sleep(0.1)
    body = {"messages": [USER], "max_tokens": 4}
    assert (await client.post("/local/", json=body)).status == 200
    samples = await scrape(client)
    assert value(samples, "chatproxy_local_generated_tokens_total") > 0
    assert value(samples, "chatproxy_local_queue_depth") == 0
    # The worker thread may not have left the finished batch yet.
    assert ("chatproxy_local_batch_size", frozenset()) in samples
    assert value(samples, "chatproxy_local_batch_size") in (0, 1)
    assert ("chatproxy_local_tokens_per_second", frozenset()) in samples
    local = {"route": "/local/", "provider": "local", "status": "200"}
    assert value(samples, "chatproxy_requests_total", **local) == 1


async def test_openmetrics_when_the_scraper_asks_for_it(proxy: Proxy) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

    client = await proxy()
    await client.get("/health")
    accept = "application/openmetrics-text; version=1.0.0"
    resp = await client.get("/metrics", headers={"Accept": accept})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await resp.text()
    families = {f.name: f for f in parse_om(text)}  # type: ignore[no-untyped-call]
    health = [s for s in families["chatproxy_requests"].samples if s.labels["route"] == "/health"]
    assert [s.value for s in health if s.name == "chatproxy_requests_total"] == [1]


def test_the_fast_families_render_as_prometheus_clients_own() -> None:
    from prometheus_client import Counter, Histogram

    from chatproxy.metrics.families import SHORT_BUCKETS
    from chatproxy.metrics.fast import CounterFamily, FamiliesCollector, HistogramFamily

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histogram = HistogramFamily("x_seconds", "A histogram.", ("a",), SHORT_BUCKETS)
    counter = CounterFamily("x", "A counter.", ("a",))
    ours.register(FamiliesCollector([histogram, counter]))
    reference = Histogram(
        "x_seconds", "A histogram.", ("a",), buckets=SHORT_BUCKETS, registry=theirs
    )
    reference_counter = Counter("x", "A counter.", ("a",), registry=theirs)
    for amount in (0.0001, 0.0005, 0.01, 0.3, 7.0, 500.0):
        for family in (histogram, reference):
            family.labels("one").observe(amount)
        for count in (counter, reference_counter):
            count.labels("two").inc(amount)
    expected = {
        key: v
        for key, v in parse(generate_latest(theirs).decode()).items()
        if not key[0].endswith("_created")
    }
    assert parse(generate_latest(ours).decode()) == expected


async def test_embeddings_are_counted_with_their_provider_model_and_tokens(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    fake = EmbeddingOpenAI()
    fake.base_url = str((await aiohttp_server(fake.app())).make_url("/v1"))
    client = await serve(aiohttp_client, openai_settings(fake))
    body = {"model": "text-embedding-3-small", "input": ["one two", "three"]}
    resp = await client.post("/v1/embeddings", json=body)
    assert resp.status == 200, await resp.text()
    assert set(timing(resp.headers["Server-Timing"])) == {"upstream", "proxy"}
    samples = await scrape(client)
    labels = {"provider": "chatgpt", "model": "text-embedding-3-small"}
    assert value(samples, "chatproxy_requests_total", route="/v1/embeddings", **labels) == 1
    assert value(samples, "chatproxy_tokens_total", direction="in", **labels) == 3
    assert value(samples, "chatproxy_upstream_duration_seconds_count", outcome="ok", **labels) == 1


async def test_server_timing_on_redirects_too(proxy: Proxy) -> None:
    client = await proxy(root_path="/api")
    resp = await client.get("/api", allow_redirects=False)
    assert resp.status == 308
    assert set(timing(resp.headers["Server-Timing"])) == {"proxy"}


def test_a_multiprocess_folder_that_is_missing_stops_the_start_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from chatproxy.app import create_app

    missing = tmp_path / "not-made"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(missing))
    with pytest.raises(SystemExit) as stopped:
        create_app(make_settings())
    assert str(stopped.value.code).startswith("chatproxy: PROMETHEUS_MULTIPROC_DIR")
    assert str(missing) in str(stopped.value.code)


async def only_done(request: web.Request) -> web.StreamResponse:
    """A stream that ends before its first delta."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"data: [DONE]\n\n")
    return resp


async def test_server_timing_on_a_stream_without_a_delta(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    fake_openai.queue(only_done)
    resp = await client.post("/chatgpt/", json={"messages": [USER], "stream": True})
    assert resp.status == 200
    await resp.read()
    assert set(timing(resp.headers["Server-Timing"])) == {"upstream"}
