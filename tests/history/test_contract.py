"""The contract every HistoryStore keeps, run against every backend on a real server."""

from __future__ import annotations

import asyncio
import string
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from chatproxy.history import HistoryStore, StoredMessage
from chatproxy.history.base import Recalled
from chatproxy.schemas import Message
from tests.history.conftest import Backend

T0 = datetime(2024, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)


def new_id() -> str:
    return f"conv-{uuid.uuid4().hex}"


def msg(role: str, content: str, *, seconds: int = 0, model: str | None = None) -> StoredMessage:
    return StoredMessage(role, content, T0 + timedelta(seconds=seconds), model)


def pair(i: int) -> list[StoredMessage]:
    return [
        msg("user", f"question {i}", seconds=2 * i),
        msg("assistant", f"answer {i}", seconds=2 * i + 1),
    ]


async def test_create_and_info(store: HistoryStore) -> None:
    cid = new_id()
    before = datetime.now(UTC)
    assert await store.create(cid, "alice", "gigachat/GigaChat-Pro")
    info = await store.info(cid, "alice")
    assert info is not None
    assert (info.conversation_id, info.owner, info.model) == (cid, "alice", "gigachat/GigaChat-Pro")
    assert info.created_at.utcoffset() == timedelta(0)
    assert (
        before - timedelta(seconds=1) <= info.created_at <= datetime.now(UTC) + timedelta(seconds=1)
    )
    assert await store.recent_turns(cid, "alice", 5) == []
    assert await store.messages(cid, "alice") == []


async def test_create_refuses_an_existing_id_whoever_owns_it(store: HistoryStore) -> None:
    cid = new_id()
    assert await store.create(cid, "alice")
    assert not await store.create(cid, "alice", "other/model")
    assert not await store.create(cid, "bob")
    info = await store.info(cid, "alice")
    assert info is not None and info.model is None


async def test_unknown_conversation(store: HistoryStore) -> None:
    cid = new_id()
    assert await store.info(cid, "alice") is None
    assert await store.recent_turns(cid, "alice", 3) is None
    assert await store.messages(cid, "alice") is None
    assert not await store.clear(cid, "alice")
    assert not await store.delete(cid, "alice")
    assert not await store.set_model(cid, "alice", "x/y")


async def test_append_creates_and_keeps_order(store: HistoryStore) -> None:
    cid = new_id()
    for i in range(5):
        assert await store.append_turn(cid, "alice", pair(i))
    info = await store.info(cid, "alice")
    assert info is not None and info.owner == "alice" and info.model is None
    messages = await store.messages(cid, "alice")
    assert messages == [m for i in range(5) for m in pair(i)]
    assert await store.recent_turns(cid, "alice", 2) == [pair(3), pair(4)]
    assert await store.recent_turns(cid, "alice", 5) == [pair(i) for i in range(5)]
    assert await store.recent_turns(cid, "alice", 50) == [pair(i) for i in range(5)]
    assert await store.recent_turns(cid, "alice", 0) == []
    with pytest.raises(ValueError, match="limit"):
        await store.recent_turns(cid, "alice", -1)


async def test_recall_is_the_recent_turns_text_and_the_model(store: HistoryStore) -> None:
    """The chat path's read: role and content of the last turns, as recent_turns has them."""
    cid = new_id()
    assert await store.recall(cid, "alice", 3) is None
    unicode = [msg("user", "ж 🙂 \u2028 \x00 end"), msg("assistant", "\\n \" ' {}")]
    for turn in (pair(0), pair(1), unicode, pair(3)):
        assert await store.append_turn(cid, "alice", turn)
    for limit in (0, 1, 3, 10):
        turns = await store.recent_turns(cid, "alice", limit)
        assert turns is not None
        expected = [Message(role=m.role, content=m.content) for t in turns for m in t]
        assert await store.recall(cid, "alice", limit) == Recalled(expected, None)
    assert await store.set_model(cid, "alice", "gigachat/GigaChat-Pro")
    recalled = await store.recall(cid, "alice", 2)
    assert recalled is not None and recalled.model == "gigachat/GigaChat-Pro"
    assert [m.content for m in recalled.messages] == [
        "ж 🙂 \u2028 \x00 end",
        "\\n \" ' {}",
        "question 3",
        "answer 3",
    ]
    assert await store.recall(cid, "bob", 3) is None, "another owner sees nothing"


async def test_recall_keeps_the_first_turns_instructions(store: HistoryStore) -> None:
    """A conversation's leading system messages go with every recall, however far back
    its first turn lies; nothing else of that turn does, and nothing comes twice."""
    cid = new_id()
    first = [msg("system", "be a pirate"), msg("system", "be brief"), *pair(0)]
    for turn in (first, pair(1), pair(2)):
        assert await store.append_turn(cid, "o", turn)

    def text(recalled: Recalled | None) -> list[str]:
        assert recalled is not None
        return [m.content for m in recalled.messages]

    rules = ["be a pirate", "be brief"]
    assert text(await store.recall(cid, "o", 1)) == [*rules, "question 2", "answer 2"]
    assert text(await store.recall(cid, "o", 0)) == rules
    whole = [*rules, "question 0", "answer 0", "question 1", "answer 1", "question 2", "answer 2"]
    assert text(await store.recall(cid, "o", 3)) == whole
    assert text(await store.recall(cid, "o", 9)) == whole
    plain = new_id()
    for turn in (pair(0), [msg("system", "late rule"), *pair(1)], pair(2)):
        assert await store.append_turn(plain, "o", turn)
    assert text(await store.recall(plain, "o", 1)) == ["question 2", "answer 2"]


async def test_turns_of_any_length(store: HistoryStore) -> None:
    cid = new_id()
    three = [msg("system", "be brief"), msg("user", "hi"), msg("assistant", "hello")]
    assert await store.append_turn(cid, "", three)
    assert await store.append_turn(cid, "", [msg("assistant", "alone")])
    assert await store.recent_turns(cid, "", 10) == [three, [msg("assistant", "alone")]]
    with pytest.raises(ValueError, match="at least one"):
        await store.append_turn(cid, "", [])


async def test_timestamps_are_utc_and_round_trip(store: HistoryStore) -> None:
    cid = new_id()
    moscow = timezone(timedelta(hours=3))
    local = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=moscow)
    await store.append_turn(cid, "alice", [StoredMessage("user", "x", local, None)])
    [stored] = await store.messages(cid, "alice") or []
    assert stored.timestamp == local
    assert stored.timestamp.utcoffset() == timedelta(0)
    assert stored.timestamp.isoformat() == "2024-01-02T00:04:05.678901+00:00"
    with pytest.raises(ValueError, match="time zone"):
        await store.append_turn(cid, "alice", [StoredMessage("user", "x", datetime(2024, 1, 1))])
    assert len(await store.messages(cid, "alice") or []) == 1


async def test_models_per_message(store: HistoryStore) -> None:
    cid = new_id()
    turn = [
        msg("user", "q", model="chatgpt/gpt-4o-mini"),
        msg("assistant", "a", model="chatgpt/gpt-4o-mini-2024-07-18"),
    ]
    await store.append_turn(cid, "alice", turn)
    await store.append_turn(
        cid, "alice", [msg("user", "q2"), msg("assistant", "a2", model="ernie/x")]
    )
    messages = await store.messages(cid, "alice") or []
    assert [m.model for m in messages] == [
        "chatgpt/gpt-4o-mini",
        "chatgpt/gpt-4o-mini-2024-07-18",
        None,
        "ernie/x",
    ]


async def test_clear_keeps_the_conversation_and_its_model(store: HistoryStore) -> None:
    cid = new_id()
    await store.create(cid, "alice", "ernie/ernie-4.0-8k")
    await store.append_turn(cid, "alice", pair(0))
    assert await store.clear(cid, "alice")
    assert await store.messages(cid, "alice") == []
    info = await store.info(cid, "alice")
    assert info is not None and info.model == "ernie/ernie-4.0-8k"
    assert await store.clear(cid, "alice")  # clearing an empty conversation is fine
    await store.append_turn(cid, "alice", pair(1))
    assert await store.recent_turns(cid, "alice", 5) == [pair(1)]


async def test_delete(store: HistoryStore) -> None:
    cid = new_id()
    await store.create(cid, "alice", "x/y")
    await store.append_turn(cid, "alice", pair(0))
    assert await store.delete(cid, "alice")
    assert await store.info(cid, "alice") is None
    assert await store.messages(cid, "alice") is None
    assert await store.recent_turns(cid, "alice", 1) is None
    assert not await store.delete(cid, "alice")
    # The id is free again, for anyone; nothing of the old conversation comes back.
    assert await store.append_turn(cid, "bob", pair(7))
    assert await store.messages(cid, "bob") == pair(7)


async def test_set_model(store: HistoryStore) -> None:
    cid = new_id()
    await store.append_turn(cid, "alice", pair(0))
    assert await store.set_model(cid, "alice", "gigachat/GigaChat")
    info = await store.info(cid, "alice")
    assert info is not None and info.model == "gigachat/GigaChat"
    assert await store.set_model(cid, "alice", None)
    info2 = await store.info(cid, "alice")
    assert info2 is not None and info2.model is None and info2.created_at == info.created_at
    assert await store.messages(cid, "alice") == pair(0)


async def test_another_owner_sees_nothing_and_writes_nothing(store: HistoryStore) -> None:
    cid = new_id()
    await store.create(cid, "alice", "x/y")
    await store.append_turn(cid, "alice", pair(0))
    before = await store.info(cid, "alice")
    for other in ("bob", "", "ALICE", "alice "):
        assert await store.info(cid, other) is None
        assert await store.recent_turns(cid, other, 5) is None
        assert await store.messages(cid, other) is None
        assert not await store.append_turn(cid, other, pair(9))
        assert not await store.clear(cid, other)
        assert not await store.set_model(cid, other, "evil/model")
        assert not await store.delete(cid, other)
    assert before is not None and before.model == "x/y"
    assert await store.info(cid, "alice") == before
    assert await store.messages(cid, "alice") == pair(0)


async def test_ids_with_every_allowed_character(store: HistoryStore) -> None:
    alphabet = string.ascii_letters + string.digits + "._:/-"
    ids = [alphabet, ("x/" * 64)[:128], "a", "::", "..", "-", "/", "a{b}c", "{"]
    ids.append((alphabet * 3)[:128])
    for cid in ids:
        assert await store.append_turn(cid, "owner", pair(len(cid)))
    for cid in ids:
        assert await store.messages(cid, "owner") == pair(len(cid))
        assert await store.delete(cid, "owner")


async def test_unicode_content(store: HistoryStore) -> None:
    cid = new_id()
    texts = [
        "Привет! Как дела?",
        "你好，世界",
        "emoji 🎉👍🏽 and a ZWJ 👩‍💻",
        "quotes \" ' ` and backslash \\ and newline\n\ttab",
        "NUL \x00 inside",
        "lone surrogate \ud800 from JSON",
        '{"json": ["looking", 1]}',
        "x" * 100_000,
    ]
    for text in texts:
        await store.append_turn(cid, "владелец", [msg("user", text, model="модель/ü")])
    messages = await store.messages(cid, "владелец") or []
    assert [m.content for m in messages] == texts
    assert {m.model for m in messages} == {"модель/ü"}


def assert_paired(messages: list[StoredMessage], count: int) -> None:
    assert len(messages) == 2 * count
    users = [m.content for m in messages[0::2]]
    replies = [m.content for m in messages[1::2]]
    assert sorted(users) == sorted(f"question {i}" for i in range(count))
    assert replies == [u.replace("question", "answer") for u in users]


async def test_concurrent_appends_never_interleave(store: HistoryStore) -> None:
    cid = new_id()
    results = await asyncio.gather(*(store.append_turn(cid, "alice", pair(i)) for i in range(20)))
    assert all(results)
    assert_paired(await store.messages(cid, "alice") or [], 20)
    turns = await store.recent_turns(cid, "alice", 20) or []
    assert len(turns) == 20 and all(len(t) == 2 for t in turns)


async def test_concurrent_first_appends_by_two_owners(store: HistoryStore) -> None:
    """One owner wins the new id; the other is refused and writes nothing."""
    cid = new_id()
    results = await asyncio.gather(
        *(store.append_turn(cid, owner, pair(i)) for i in range(10) for owner in ("a", "b"))
    )
    winner = "a" if results[0] else "b"
    assert results == [owner == winner for i in range(10) for owner in ("a", "b")]
    assert_paired(await store.messages(cid, winner) or [], 10)


async def test_two_instances_append_concurrently(shared: Backend) -> None:
    """Two pools (two processes, as far as the server knows) on one conversation."""
    one, two = await shared.opened(), await shared.opened()
    cid = new_id()
    await asyncio.gather(
        *((one if i % 2 else two).append_turn(cid, "alice", pair(i)) for i in range(40))
    )
    assert_paired(await one.messages(cid, "alice") or [], 40)
    assert await one.messages(cid, "alice") == await two.messages(cid, "alice")


async def test_fork_copies_the_last_turns_into_a_new_branch(store: HistoryStore) -> None:
    source, target, other = new_id(), new_id(), new_id()
    assert await store.create(source, "alice", "chatgpt/gpt-4o")
    for i in range(3):
        await store.append_turn(source, "alice", pair(i))
    assert await store.fork(source, target, "alice", 2)
    assert await store.recent_turns(target, "alice", 10) == [pair(1), pair(2)]
    info = await store.info(target, "alice")
    assert info is not None and info.model == "chatgpt/gpt-4o"
    await store.append_turn(target, "alice", pair(7))
    assert await store.recent_turns(source, "alice", 10) == [pair(0), pair(1), pair(2)]
    assert not await store.fork(source, target, "alice", 2), "the target exists"
    assert not await store.fork(source, other, "bob", 2), "not bob's to copy"
    assert await store.info(other, "bob") is None
    assert not await store.fork(new_id(), other, "alice", 2)


async def test_fork_of_an_empty_conversation(store: HistoryStore) -> None:
    source, target = new_id(), new_id()
    assert await store.create(source, "")
    assert await store.fork(source, target, "", 5)
    assert await store.recent_turns(target, "", 5) == []
