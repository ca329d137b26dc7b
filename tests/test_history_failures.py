"""The history layer when its store fails: down, silent, erring, or holding a password."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import Proxy
from tests.fakes.openai_server import FakeOpenAI
from tests.history_stores import app_postgres, silent_port

__all__ = ["app_postgres", "silent_port"]  # fixtures, used by name


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


@pytest.mark.parametrize("kind", ["postgres", "redis"])
async def test_a_store_that_is_down_is_503_and_the_rest_still_serves(
    proxy: Proxy, fake_openai: FakeOpenAI, kind: str
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        url = {
            "postgres": f"postgresql://u@127.0.0.1:{port}/db",
            "redis": f"redis://127.0.0.1:{port}",
        }
        client = await proxy(history_store=url[kind], history_timeout=1)
        started = time.monotonic()
        resp = await client.post(
            "/chatgpt/", json={"messages": [user("x")], "conversation_id": "c"}
        )
        assert resp.status == 503
        assert "history store" in (await resp.json())["error"]
        assert time.monotonic() - started < 3
        ready = await client.get("/ready")
        assert ready.status == 503 and "history" in (await ready.json())["providers"]
        assert (await client.get("/history/c")).status == 503
        stateless = await client.post("/chatgpt/", json={"messages": [user("x")]})
        assert stateless.status == 200
    assert fake_openai.requests[-1]["messages"][-1]["content"] == "x"
    assert len(fake_openai.requests) == 1, "the turn that needed the store never went upstream"


async def test_a_store_that_answers_slowly_is_503_within_its_timeout(
    proxy: Proxy, fake_openai: FakeOpenAI, silent_port: int
) -> None:
    client = await proxy(history_store=f"redis://127.0.0.1:{silent_port}", history_timeout=0.5)
    started = time.monotonic()
    resp = await client.post("/chatgpt/", json={"messages": [user("x")], "conversation_id": "c"})
    assert resp.status == 503
    assert time.monotonic() - started < 2.5
    assert (await client.get("/ready")).status == 503
    assert fake_openai.requests == []


async def test_concurrent_requests_on_a_silent_store_all_fail_within_one_timeout(
    proxy: Proxy, fake_openai: FakeOpenAI, silent_port: int
) -> None:
    """Not one after another: the tenth request waits one timeout, not ten."""
    for url in (f"redis://127.0.0.1:{silent_port}", f"postgresql://u@127.0.0.1:{silent_port}/db"):
        client = await proxy(history_store=url, history_timeout=0.5)
        started = time.monotonic()
        answers = await asyncio.gather(
            *(
                client.post("/chatgpt/", json={"messages": [user("x")], "conversation_id": f"c{n}"})
                for n in range(10)
            )
        )
        assert [a.status for a in answers] == [503] * 10
        assert time.monotonic() - started < 2, url
        await client.close()
    assert fake_openai.requests == []


async def test_a_store_that_errs_is_503_not_500_and_chatproxy_still_starts(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    """Not only refused connections: a database that does not exist is the store failing."""
    client = await proxy(history_store="postgresql://postgres@localhost:5432/no_such_db_x")
    resp = await client.post("/chatgpt/", json={"messages": [user("x")], "conversation_id": "c"})
    assert resp.status == 503
    assert "no_such_db_x" in (await resp.json())["error"]
    assert (await client.get("/ready")).status == 503
    assert (await client.get("/history/c")).status == 503
    assert (await client.post("/chatgpt/", json={"messages": [user("x")]})).status == 200


async def test_status_and_log_show_no_password_of_the_store(
    proxy: Proxy, caplog: pytest.LogCaptureFixture, app_postgres: str
) -> None:
    url = app_postgres.replace("postgres@", "postgres:hunter2secret@") + "?password=qpass9999"
    client = await proxy(history_store=url)
    text = await (await client.get("/status")).text()
    assert "history" in text and "hunter2secret" not in text and "qpass9999" not in text
    assert "qpass9999" not in caplog.text and "hunter2secret" not in caplog.text


async def test_status_shows_a_store_url_without_a_password_as_it_is(
    proxy: Proxy, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    client = await proxy(history_store=url)
    status = await (await client.get("/status")).json()
    assert status["history"] == {"enabled": True, "store": url, "max_turns": 20}
