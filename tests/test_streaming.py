"""Native streaming: deltas, the done event, and every way a stream can fail."""

from __future__ import annotations

import asyncio

from chatproxy.schemas import ChatResponse
from tests.conftest import Proxy
from tests.fakes.openai_server import FakeOpenAI, hang, raw, status, stream
from tests.sse_client import read_events

USER = {"role": "user", "content": "hi"}


async def test_stream_sends_deltas_then_done(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = stream(["Hel", "lo", " there"])
    client = await proxy()
    resp = await client.post("/chatgpt/", json={"messages": [USER], "stream": True})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert len(resp.headers["X-Request-ID"]) == 32, "streams carry the request id too"
    events = await read_events(resp)
    assert [e for e in events if e[0] == "delta"] == [
        ("delta", {"content": "Hel"}),
        ("delta", {"content": "lo"}),
        ("delta", {"content": " there"}),
    ]
    name, done = events[-1]
    assert name == "done"
    assert done["messages"][-1] == {"role": "assistant", "content": "Hello there"}
    assert done["messages"][0]["role"] == "system"
    assert done["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    as_schema = ChatResponse.model_validate(done)
    assert done == as_schema.model_dump(mode="json", exclude_unset=True), "the plain answer's shape"
    sent = fake_openai.requests[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_events_split_across_reads_are_reassembled(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = stream(["Привет", ", ", "мир"], split=True)
    client = await proxy()
    events = await read_events(
        await client.post("/chatgpt/", json={"messages": [USER], "stream": True})
    )
    assert events[-1][1]["messages"][-1]["content"] == "Привет, мир"


async def test_failure_before_first_byte_is_a_plain_json_error(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = status(400, {"error": {"message": "bad model"}})
    client = await proxy()
    resp = await client.post("/chatgpt/", json={"messages": [USER], "stream": True})
    assert resp.status == 400
    assert resp.headers["Content-Type"].startswith("application/json")
    assert "bad model" in (await resp.json())["error"]


async def test_retries_happen_before_the_first_byte(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.queue(status(503), stream(["ok"]))
    client = await proxy()
    events = await read_events(
        await client.post("/chatgpt/", json={"messages": [USER], "stream": True})
    )
    assert events[-1][0] == "done"
    assert len(fake_openai.requests) == 2


async def test_stream_without_done_marker_ends_in_an_error_event(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.default = stream(["partial"], done=False)
    client = await proxy()
    resp = await client.post("/chatgpt/", json={"messages": [USER], "stream": True})
    assert resp.status == 200
    events = await read_events(resp)
    assert events[0] == ("delta", {"content": "partial"})
    assert events[-1][0] == "error"
    assert "[DONE]" in events[-1][1]["error"]
    assert len(fake_openai.requests) == 1, "no retry once streaming began"


async def test_silent_upstream_mid_stream_times_out(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = stream(["one", "two", "three"], stall_after=2)
    client = await proxy(upstream_read_timeout=0.3)
    resp = await client.post("/chatgpt/", json={"messages": [USER], "stream": True})
    events = await asyncio.wait_for(read_events(resp), 5)
    assert [e[1]["content"] for e in events if e[0] == "delta"] == ["one", "two"]
    assert events[-1][0] == "error"
    assert events[-1][1]["type"] == "upstream_timeout"


async def test_no_first_byte_is_504(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = hang()
    client = await proxy(upstream_first_byte_timeout=0.3, upstream_timeout=10)
    resp = await asyncio.wait_for(
        client.post("/chatgpt/", json={"messages": [USER], "stream": True}), 5
    )
    assert resp.status == 504
    assert "first byte" in (await resp.json())["error"]


async def test_upstream_error_event_mid_stream(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    body = (
        b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
        b'data: {"error":{"message":"overloaded"}}\n\n'
    )
    fake_openai.default = raw(body, content_type="text/event-stream")
    client = await proxy()
    events = await read_events(
        await client.post("/chatgpt/", json={"messages": [USER], "stream": True})
    )
    assert events[-1][0] == "error"
    assert "overloaded" in events[-1][1]["error"]


async def test_client_disconnect_closes_the_upstream(proxy: Proxy, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = stream([f"t{i}" for i in range(200)], pause=0.02)
    client = await proxy()
    resp = await client.post("/chatgpt/", json={"messages": [USER], "stream": True})
    first = await resp.content.readline()
    assert first.startswith(b"event: delta")
    resp.close()
    for _ in range(100):
        if fake_openai.disconnects:
            break
        await asyncio.sleep(0.02)
    assert fake_openai.disconnects == 1, "the upstream saw its client go away"
    status_body = await (await client.get("/status")).json()
    assert status_body["providers"]["chatgpt"]["in_flight"] == 0
