"""Property-based fuzzing of request bodies through the real app and fake upstreams.

Whatever a client sends, chatproxy answers with a documented status and a JSON error
envelope (or a well-formed answer or stream), never a 500, and logs no unhandled error.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import pydantic_core
import pytest
from aiohttp import web
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from chatproxy.openai_schemas import ChatCompletion, ChatCompletionChunk, OpenAIChatRequest
from chatproxy.schemas import ChatRequest, ChatResponse
from tests import strategies as fz
from tests.conftest import (
    AiohttpClient,
    Client,
    ernie_settings,
    gigachat_settings,
    make_settings,
    serve,
)
from tests.fakes.ernie_server import FakeErnie
from tests.fakes.gigachat_server import FakeGigaChat
from tests.fakes.openai_server import FakeOpenAI, completion_body, stream

fuzz = settings(
    max_examples=300,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    **fz.FUZZ_SETTINGS,
)
# 413: a body over MAX_BODY_BYTES; 429, 502, 504: the upstream's limits, failures and
# silences; 503: a provider not configured (`local` here).
ALLOWED = frozenset({200, 400, 413, 429, 502, 503, 504})
NATIVE_PROVIDERS = ["chatgpt", "gigachat", "ernie", "local"]
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]


async def answer_like_openai(request: web.Request) -> web.StreamResponse:
    """The fake OpenAI's answer: a stream when one was asked for."""
    body = await request.json()
    if isinstance(body, dict) and body.get("stream") is True:
        return await stream(["Hel", "lo"])(request)
    return web.json_response(completion_body("Hello!"))


class Fakes:
    """The app's client and its fakes; not a dataclass, so a failing example does not print
    everything the fakes recorded."""

    def __init__(
        self, client: Client, openai: FakeOpenAI, gigachat: FakeGigaChat, ernie: FakeErnie
    ) -> None:
        self.client, self.openai, self.gigachat, self.ernie = client, openai, gigachat, ernie

    def __repr__(self) -> str:
        return "Fakes(...)"

    def calls(self) -> int:
        """How many chat requests reached any upstream so far."""
        return len(self.openai.requests) + len(self.gigachat.chats) + len(self.ernie.chats)


@pytest.fixture
async def app(
    aiohttp_client: AiohttpClient,
    fake_openai: FakeOpenAI,
    fake_gigachat: FakeGigaChat,
    fake_ernie: FakeErnie,
) -> Fakes:
    """The real app with three providers configured against their fakes; `local` is off."""
    fake_openai.default = answer_like_openai
    values: dict[str, Any] = {
        "openai_api_key": "sk-test-fuzz",
        "openai_base_url": fake_openai.base_url,
        **gigachat_settings(fake_gigachat),
        **ernie_settings(fake_ernie),
        "upstream_timeout": 5.0,
        "upstream_retries": 1,
        "max_messages": 50,
    }
    client = await serve(aiohttp_client, make_settings(**values))
    return Fakes(client, fake_openai, fake_gigachat, fake_ernie)


# Loggers whose ERROR records mean a bug was hit: chatproxy's own (an unhandled error, a
# stream that broke on one) and aiohttp's server, which logs a handler that raised past
# every middleware: chatproxy's, or a fake upstream's that could not read what chatproxy
# sent it (the fakes refuse what the real APIs refuse, with the real APIs' errors).
BUG_LOGGERS = ("chatproxy", "aiohttp.server", "aiohttp.web")


def bug_records(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.levelno >= logging.ERROR and r.name.startswith(BUG_LOGGERS)]


def raise_logged_bug(records: list[logging.LogRecord], status: int) -> None:
    """Raise the exception a bug logger recorded, with its own traceback: Hypothesis then
    tells distinct bugs apart by where they were raised, and reports each."""
    for record in bug_records(records):
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, Exception):
            exc.add_note(f"{record.name} logged {record.getMessage()!r}; answered {status}")
            raise exc
    lines = [f"{r.name}: {r.getMessage()}" for r in bug_records(records)]
    assert not lines, lines


def is_json_object(raw: bytes) -> bool:
    """As chatproxy's parser sees it (which refuses lone surrogates, unlike `json`)."""
    try:
        return isinstance(pydantic_core.from_json(raw), dict)
    except ValueError:
        return False


def schema_problem(raw: bytes, model: type[BaseModel]) -> str | None:
    """The field the request schema itself refuses in a JSON object body, if any."""
    if not is_json_object(raw):
        return None
    try:
        model.model_validate_json(raw)
    except ValidationError as exc:
        loc = exc.errors(include_url=False)[0]["loc"]
        return ".".join(str(part) for part in loc) or None
    return None


def check_error(status: int, data: Any, openai: bool) -> dict[str, Any]:
    """The documented envelope; returns the error as a flat dict."""
    if openai:
        assert isinstance(data, dict) and set(data) == {"error"}, data
        error = data["error"]
        assert isinstance(error, dict), data
        assert isinstance(error.get("message"), str) and error["message"], data
        flat = error
    else:
        assert isinstance(data, dict), data
        assert isinstance(data.get("error"), str) and data["error"], data
        flat = {**data, "message": data["error"]}
    assert isinstance(flat.get("type"), str), data
    assert flat["type"] != "internal_error", data
    assert flat.get("param") is None or isinstance(flat["param"], str), data
    return flat


def sse_events(text: str) -> list[tuple[str, str]]:
    """(event, data) pairs. Lines end at CR or LF only, as SSE says: `str.splitlines` would
    also split at U+0085 or U+2028, which JSON leaves unescaped inside a string."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in re.split("\r\n|\r|\n", block):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        events.append((name, "\n".join(data)))
    return events


def check_stream(text: str, openai: bool) -> None:
    events = sse_events(text)
    assert events, "an empty stream"
    if openai:
        assert events[-1] == ("message", "[DONE]"), events[-3:]
        for _, data in events[:-1]:
            chunk = json.loads(data)
            if "error" in chunk:
                assert chunk["error"]["type"] != "internal_error", chunk
            else:
                ChatCompletionChunk.model_validate(chunk)
    else:
        name, data = events[-1]
        assert name in ("done", "error"), events[-3:]
        final = json.loads(data)
        if name == "error":
            assert final["type"] != "internal_error", final
        else:
            ChatResponse.model_validate(final)


@dataclass
class Outcome:
    status: int
    error: dict[str, Any] | None
    upstream_called: bool


async def post(
    fakes: Fakes,
    caplog: pytest.LogCaptureFixture,
    path: str,
    raw: bytes,
    content_type: str = "application/json",
) -> Outcome:
    """POST `raw` and hold the answer to the properties every answer has."""
    caplog.clear()
    before = fakes.calls()
    headers = {"Content-Type": content_type} if content_type else {}
    # A BytesIO, as aiohttp warns of large raw bytes bodies (and warnings are errors).
    resp = await fakes.client.post(path, data=io.BytesIO(raw), headers=headers)
    text = await resp.text()
    openai = path.startswith("/v1/")
    raise_logged_bug(caplog.records, resp.status)
    assert resp.status in ALLOWED, (resp.status, text[:500])
    error = None
    if resp.status != 200:
        assert resp.content_type == "application/json", resp.content_type
        error = check_error(resp.status, json.loads(text), openai)
    elif resp.content_type == "text/event-stream":
        check_stream(text, openai)
    else:
        answer = json.loads(text)
        (ChatCompletion if openai else ChatResponse).model_validate(answer)
    return Outcome(resp.status, error, fakes.calls() > before)


def note(outcome: Outcome) -> None:
    """What the answers were, for --hypothesis-show-statistics."""
    param = outcome.error.get("param") if outcome.error else None
    asked = " (upstream asked)" if outcome.upstream_called else ""
    event(f"{outcome.status}{asked} {str(param).split('.')[0]}")


def check_refusal(outcome: Outcome, raw: bytes, model: type[BaseModel]) -> None:
    """A body the schema refuses is a 400 naming a field of the schema; a 400 chatproxy
    gives on its own (no upstream asked) names the field too."""
    problem = schema_problem(raw, model)
    if problem is not None:
        assert outcome.status == 400, (outcome.status, problem)
        assert outcome.error is not None
        param = outcome.error.get("param")
        assert param is not None and param.split(".")[0] in model.model_fields, (param, problem)
    elif outcome.status == 400 and not outcome.upstream_called and is_json_object(raw):
        assert outcome.error is not None and outcome.error.get("param"), outcome.error


@fuzz
@given(
    data=st.data(),
    provider=st.sampled_from(NATIVE_PROVIDERS),
    ascii_only=st.booleans(),
)
async def test_native_bodies(
    app: Fakes,
    caplog: pytest.LogCaptureFixture,
    data: st.DataObject,
    provider: str,
    ascii_only: bool,
) -> None:
    body = data.draw(fz.native_body(provider), label="body")
    raw = fz.encode(body, ascii_only)
    outcome = await post(app, caplog, f"/{provider}/", raw)
    note(outcome)
    check_refusal(outcome, raw, ChatRequest)


@fuzz
@given(body=fz.v1_body(), ascii_only=st.booleans())
async def test_v1_bodies(
    app: Fakes, caplog: pytest.LogCaptureFixture, body: dict[str, Any], ascii_only: bool
) -> None:
    raw = fz.encode(body, ascii_only)
    outcome = await post(app, caplog, "/v1/chat/completions", raw)
    note(outcome)
    check_refusal(outcome, raw, OpenAIChatRequest)


def entries(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    return value if isinstance(value, list) else []


def malformed_tools(body: dict[str, Any]) -> str | None:
    """The tool field holding an entry GigaChat's translation cannot use, if any: such an
    entry must be refused, not dropped on the way to GigaChat."""
    for tool in entries(body, "tools"):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not (
            isinstance(tool, dict)
            and tool.get("type") == "function"
            and isinstance(function, dict)
            and isinstance(function.get("name"), str)
            and function["name"]
        ):
            return "tools"
    for function in entries(body, "functions"):
        if not (isinstance(function, dict) and isinstance(function.get("name"), str)):
            return "functions"
    return None


GIGA = "gigachat/GigaChat"
ASK = {"role": "user", "content": "Погода в Москве?"}
FORECAST = {"type": "function", "function": {"name": "forecast", "parameters": {"type": "object"}}}


def tool_turns(call: Any, call_id: Any = "call_1") -> list[Any]:
    """A question, an assistant turn whose `tool_calls` is `[call]`, and the result."""
    return [
        ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": '{"t": -3}'},
    ]


def good_call(**function: Any) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": "forecast", **function}}


# Bodies that once answered 500 (or were quietly served): kept whatever the generator does.
KNOWN_BAD_TOOL_BODIES: list[dict[str, Any]] = [
    {"model": GIGA, "messages": tool_turns("x")},
    {"model": GIGA, "messages": tool_turns({"id": "call_1", "function": "x"})},
    {"model": GIGA, "messages": tool_turns(good_call(arguments=5))},
    {"model": GIGA, "messages": tool_turns(good_call(arguments={"city": "Москва"}))},
    {"model": GIGA, "messages": tool_turns(good_call(arguments="{}"), call_id=[])},
    {"model": GIGA, "messages": tool_turns({**good_call(arguments="{}"), "id": {}})},
    {"model": GIGA, "messages": [ASK], "tools": [FORECAST], "tool_choice": {"function": "x"}},
    {"model": GIGA, "messages": [ASK], "functions": ["x"], "tool_choice": "required"},
    {"model": GIGA, "messages": [ASK], "tools": [5]},
    {"model": GIGA, "messages": [ASK], "tools": [{"type": "retrieval"}]},
]


def known_bad_tool_bodies(test: Any) -> Any:
    for body in KNOWN_BAD_TOOL_BODIES:
        test = example(body=body, ascii_only=False)(test)
    return test


@fuzz
@given(body=fz.tool_body(), ascii_only=st.booleans())
@known_bad_tool_bodies
async def test_v1_gigachat_tool_translation(
    app: Fakes, caplog: pytest.LogCaptureFixture, body: dict[str, Any], ascii_only: bool
) -> None:
    raw = fz.encode(body, ascii_only)
    outcome = await post(app, caplog, "/v1/chat/completions", raw)
    note(outcome)
    check_refusal(outcome, raw, OpenAIChatRequest)
    field = malformed_tools(body)
    if field is not None and schema_problem(raw, OpenAIChatRequest) is None:
        assert outcome.status == 400, f"a malformed {field} entry was not refused: {body}"


@fuzz
@given(
    raw=fz.raw_bodies,
    path=st.sampled_from(["/chatgpt/", "/gigachat", "/ernie/", "/v1/chat/completions"]),
    content_type=st.sampled_from(CONTENT_TYPES),
)
async def test_raw_bodies(
    app: Fakes, caplog: pytest.LogCaptureFixture, raw: bytes, path: str, content_type: str
) -> None:
    outcome = await post(app, caplog, path, raw, content_type)
    assert outcome.status == 400, outcome
    assert not outcome.upstream_called


async def test_a_body_over_the_limit_is_413(app: Fakes, caplog: pytest.LogCaptureFixture) -> None:
    huge = {"messages": [{"role": "user", "content": "x" * 1_100_000}]}
    for path in ("/chatgpt/", "/v1/chat/completions"):
        outcome = await post(app, caplog, path, fz.encode({"model": "gpt-4o", **huge}, True))
        assert outcome.status == 413
