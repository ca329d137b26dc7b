"""ERNIE's message rules as properties: whatever the client sends, ERNIE gets what it accepts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chatproxy.clients.base import CompletionRequest
from chatproxy.clients.ernie_rules import MAX_LAST_MESSAGE_CHARS, ernie_payload, normalize_messages
from chatproxy.errors import InvalidRequestError
from chatproxy.schemas import Message
from tests.fakes.ernie_server import rule_violation

roles = st.sampled_from(["system", "user", "assistant"])
messages = st.lists(
    st.builds(Message, role=roles, content=st.text(min_size=0, max_size=3000)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(messages, st.floats(min_value=0, max_value=2), st.integers(min_value=1, max_value=10_000))
def test_payload_obeys_every_rule_and_keeps_the_newest_user_turn(
    sent: list[Message], temperature: float, max_tokens: int
) -> None:
    request = CompletionRequest(
        model="ernie-4.0-8k", messages=sent, temperature=temperature, max_tokens=max_tokens
    )
    users = [m for m in sent if m.role == "user"]
    try:
        payload = ernie_payload(request, stream=False)
    except InvalidRequestError:
        # Refused only when no user turn exists or the newest question alone is too long.
        last_user_turn = _newest_user_turn(sent)
        assert not users or len(last_user_turn) > MAX_LAST_MESSAGE_CHARS
        return
    assert rule_violation(payload) is None
    assert all(m["role"] != "system" for m in payload["messages"])
    assert payload["messages"][-1]["content"] == _newest_user_turn(sent)


def _newest_user_turn(sent: list[Message]) -> str:
    """The user text ERNIE must answer: the last run of user messages, merged."""
    turns = [m for m in sent if m.role != "system"]
    while turns and turns[-1].role == "assistant":
        turns.pop()
    run: list[str] = []
    for message in reversed(turns):
        if message.role != "user":
            break
        run.insert(0, message.content)
    return "\n\n".join(run)


def test_system_messages_are_joined_into_the_system_field() -> None:
    system, turns = normalize_messages(
        [
            Message(role="system", content="one"),
            Message(role="user", content="hi"),
            Message(role="system", content="two"),
        ]
    )
    assert system == "one\n\ntwo"
    assert turns == [Message(role="user", content="hi")]
