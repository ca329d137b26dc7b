"""Property-based fuzzing of every provider's parser with what an upstream might answer.

Each parser returns its typed value or raises an `UpstreamError`: never a TypeError,
AttributeError, KeyError or ValueError that would reach a handler as a 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatproxy.clients.base import Completion, Delta
from chatproxy.clients.ernie_rules import (
    ErnieTokenError,
    finish_reason,
    parse_answer,
    parse_event,
    raise_for_error_code,
)
from chatproxy.clients.gigachat_functions import adapt_answer, adapt_chunk
from chatproxy.clients.openai_format import parse_chunk, parse_completion, parse_usage
from chatproxy.errors import UpstreamError
from chatproxy.schemas import Usage
from tests import strategies as fz

fuzz = settings(max_examples=300, **fz.FUZZ_SETTINGS)
T = TypeVar("T")
MODEL = "the-model"


def parsed(parse: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """`parse`'s value, or None when it refused the input as an `UpstreamError` should."""
    try:
        return parse(*args, **kwargs)
    except UpstreamError as exc:
        refused = exc
    assert isinstance(refused.message, str) and refused.message, refused
    return None


def check_usage(usage: Any) -> None:
    assert isinstance(usage, Usage), usage
    for count in (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens):
        assert type(count) is int and count >= 0, usage


def check_tool_calls(tool_calls: Any) -> None:
    assert tool_calls is None or (
        isinstance(tool_calls, list) and all(isinstance(call, dict) for call in tool_calls)
    ), tool_calls


def check_completion(completion: Any) -> None:
    assert isinstance(completion, Completion), completion
    assert isinstance(completion.content, str)
    assert isinstance(completion.model, str) and completion.model
    assert isinstance(completion.finish_reason, str) and completion.finish_reason
    check_usage(completion.usage)
    check_tool_calls(completion.tool_calls)


def check_delta(delta: Any) -> None:
    assert isinstance(delta, Delta), delta
    assert isinstance(delta.content, str)
    assert delta.finish_reason is None or isinstance(delta.finish_reason, str)
    if delta.usage is not None:
        check_usage(delta.usage)
    check_tool_calls(delta.tool_calls)


# ---- OpenAI ---------------------------------------------------------------------------


@fuzz
@given(data=fz.completions())
@example(data={"choices": 1})
@example(data={"choices": {"0": {"message": {}}}})
@example(data={"choices": [{"message": {"content": None, "tool_calls": [None]}}]})
@example(data={"choices": [{"message": {}}], "usage": {"prompt_tokens": float("inf")}})
def test_openai_completion_parses_or_is_a_502(data: Any) -> None:
    completion = parsed(parse_completion, data, provider="chatgpt", model=MODEL)
    if completion is not None:
        check_completion(completion)


@fuzz
@given(text=fz.event_texts(fz.chunks()))
@example(text='{"choices": true}')
@example(text='{"choices": {"model": null}}')
@example(text='{"choices": [], "usage": {"total_tokens": NaN}}')
@example(text="[" * 5000 + "]" * 5000)
def test_openai_chunk_parses_or_is_a_502(text: str) -> None:
    delta = parsed(parse_chunk, text, "chatgpt", None)
    if delta is not None:
        check_delta(delta)


@fuzz
@given(data=st.one_of(fz.usage_values, st.none()))
@example(data={"prompt_tokens": [None]})
@example(data={"prompt_tokens": float("nan")})
@example(data={"prompt_tokens": float("inf")})
@example(data={"total_tokens": -1})
@example(data=[1, 2])
def test_usage_parses_or_is_a_502(data: Any) -> None:
    usage = parsed(parse_usage, data)
    if usage is not None:
        check_usage(usage)


@fuzz
@given(usage=fz.usages())
def test_usage_round_trips(usage: dict[str, int]) -> None:
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    assert parse_usage(usage) == Usage(prompt, completion, prompt + completion)
    assert parse_usage(None) is None


@fuzz
@given(
    content=st.one_of(fz.plain_texts, st.none()),
    model=fz.plain_texts,
    finish=st.one_of(st.none(), st.sampled_from(fz.FINISH_REASONS)),
    usage=fz.usages(),
)
def test_a_valid_openai_completion_round_trips(
    content: str | None, model: str, finish: str | None, usage: dict[str, int]
) -> None:
    data = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": usage,
    }
    completion = parse_completion(data, provider="chatgpt", model=MODEL)
    assert completion.content == (content or "")
    assert completion.model == (model or MODEL)
    assert completion.finish_reason == (finish or "stop")
    assert completion.usage == parse_usage(usage)
    assert completion.tool_calls is None


@fuzz
@given(content=fz.plain_texts, finish=st.one_of(st.none(), st.sampled_from(fz.FINISH_REASONS)))
def test_a_valid_openai_chunk_round_trips(content: str, finish: str | None) -> None:
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    }
    delta = parse_chunk(json.dumps(chunk, ensure_ascii=False), "chatgpt", None)
    if not content and finish is None:
        assert delta is None
    else:
        assert delta == Delta(content=content, finish_reason=finish)


@fuzz
@given(
    calls=st.lists(
        st.fixed_dictionaries(
            {
                "id": st.sampled_from(fz.CALL_IDS),
                "type": st.just("function"),
                "function": st.fixed_dictionaries(
                    {"name": st.sampled_from(fz.FUNCTION_NAMES), "arguments": fz.plain_texts}
                ),
            }
        ),
        min_size=1,
        max_size=3,
    )
)
def test_openai_tool_calls_pass_through(calls: list[dict[str, Any]]) -> None:
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    data = {"choices": [{"message": message, "finish_reason": "tool_calls"}]}
    completion = parse_completion(data, provider="chatgpt", model=MODEL)
    assert completion.tool_calls == calls and completion.content == ""


# ---- GigaChat -------------------------------------------------------------------------


@fuzz
@given(data=fz.completions(gigachat=True))
@example(data={"choices": 1.5})
@example(data={"choices": [{"message": {"function_call": {"name": 5}}}]})
def test_gigachat_answer_parses_or_is_a_502(data: Any) -> None:
    completion = parsed(
        lambda: parse_completion(adapt_answer(data), provider="gigachat", model=MODEL)
    )
    if completion is not None:
        check_completion(completion)


@fuzz
@given(text=fz.event_texts(fz.chunks(gigachat=True)))
def test_gigachat_chunk_parses_or_is_a_502(text: str) -> None:
    delta = parsed(parse_chunk, text, "gigachat", adapt_chunk)
    if delta is not None:
        check_delta(delta)


@fuzz
@given(
    name=st.sampled_from(fz.FUNCTION_NAMES),
    arguments=st.dictionaries(st.text(max_size=5), fz.plain_texts | st.integers(), max_size=3),
    streamed=st.booleans(),
)
def test_a_gigachat_function_call_round_trips_as_a_tool_call(
    name: str, arguments: dict[str, Any], streamed: bool
) -> None:
    call = {
        "role": "assistant",
        "content": "",
        "function_call": {"name": name, "arguments": arguments},
    }
    if streamed:
        chunk = {"choices": [{"delta": call, "finish_reason": "function_call"}]}
        result: Completion | Delta | None = parse_chunk(json.dumps(chunk), "gigachat", adapt_chunk)
    else:
        answer = {"choices": [{"message": call, "finish_reason": "function_call"}]}
        result = parse_completion(adapt_answer(answer), provider="gigachat", model=MODEL)
    assert result is not None and result.finish_reason == "tool_calls"
    assert result.tool_calls is not None
    (tool_call,) = result.tool_calls
    assert tool_call["type"] == "function" and tool_call["id"].startswith("call_")
    assert tool_call["function"]["name"] == name
    assert json.loads(tool_call["function"]["arguments"]) == arguments
    assert ("index" in tool_call) is streamed


@fuzz
@given(content=fz.plain_texts, usage=fz.usages())
def test_a_plain_gigachat_answer_round_trips(content: str, usage: dict[str, int]) -> None:
    answer = {
        "choices": [
            {"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "model": "GigaChat:1.0.26.20",
        "usage": usage,
    }
    completion = parse_completion(adapt_answer(answer), provider="gigachat", model=MODEL)
    assert completion.content == content and completion.tool_calls is None
    assert completion.model == "GigaChat:1.0.26.20"


# ---- ERNIE ----------------------------------------------------------------------------


@fuzz
@given(data=fz.ernie_answers())
@example(data={"result": "", "usage": {"total_tokens": float("inf")}})
@example(data={"error_code": [], "error_msg": {}})
def test_ernie_answer_parses_or_is_a_502(data: Any) -> None:
    def parse() -> Completion:
        raise_for_error_code(data)  # as the client's `check` does, before parsing
        return parse_answer(data, MODEL)

    completion = parsed(parse)
    if completion is not None:
        check_completion(completion)
        assert completion.model == MODEL


@fuzz
@given(text=fz.event_texts(fz.ernie_answers(stream=True)))
@example(text="[1]")
@example(text='{"result": 5, "is_end": true}')
@example(text='{"result": "", "is_end": true, "usage": {"prompt_tokens": NaN}}')
def test_ernie_event_parses_or_is_a_502(text: str) -> None:
    delta = parsed(parse_event, text)
    if delta is not None:
        check_delta(delta)


@fuzz
@given(data=st.one_of(fz.ernie_errors, fz.junk))
def test_ernie_error_codes_are_upstream_errors(data: Any) -> None:
    if isinstance(data, dict) and "error_code" in data:
        with pytest.raises(UpstreamError) as raised:
            raise_for_error_code(data)
        if data["error_code"] in (110, 111):
            assert isinstance(raised.value, ErnieTokenError)
    else:
        raise_for_error_code(data)


@fuzz
@given(data=fz.ernie_answers())
def test_ernie_finish_reason_is_text(data: Any) -> None:
    if isinstance(data, dict):
        assert finish_reason(data) in ("stop", "length", "content_filter")


def ernie_finish(truncated: bool, cleared: bool) -> str:
    return "content_filter" if cleared else "length" if truncated else "stop"


@fuzz
@given(
    result=fz.plain_texts,
    truncated=st.booleans(),
    cleared=st.booleans(),
    usage=fz.usages(),
)
def test_a_valid_ernie_answer_round_trips(
    result: str, truncated: bool, cleared: bool, usage: dict[str, int]
) -> None:
    data = {
        "id": "as-1",
        "object": "chat.completion",
        "result": result,
        "is_truncated": truncated,
        "need_clear_history": cleared,
        "usage": usage,
    }
    raise_for_error_code(data)
    completion = parse_answer(data, MODEL)
    assert completion.content == result and completion.model == MODEL
    assert completion.finish_reason == ernie_finish(truncated, cleared)
    assert completion.usage == parse_usage(usage)


@fuzz
@given(
    result=fz.plain_texts,
    end=st.booleans(),
    truncated=st.booleans(),
    cleared=st.booleans(),
    usage=fz.usages(),
)
def test_a_valid_ernie_event_round_trips(
    result: str, end: bool, truncated: bool, cleared: bool, usage: dict[str, int]
) -> None:
    event = {
        "id": "as-1",
        "sentence_id": 0,
        "result": result,
        "is_end": end,
        "is_truncated": truncated,
        "need_clear_history": cleared,
        "usage": usage,
    }
    delta = parse_event(json.dumps(event, ensure_ascii=False))
    assert delta.content == result
    assert delta.finish_reason == (ernie_finish(truncated, cleared) if end else None)
    assert delta.usage == (parse_usage(usage) if end else None)
