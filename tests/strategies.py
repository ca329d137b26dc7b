"""Hypothesis strategies for the fuzz tests: JSON junk, request bodies, upstream answers.

Every strategy puts its well-formed branch first, so a shrunk example keeps the fields that
did not matter well-formed and the one that broke things stands out.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

S = st.SearchStrategy

# Settings every fuzz test shares: the same examples on every run, and no example database
# (Hypothesis still keeps its caches in the git-ignored `.hypothesis/`).
FUZZ_SETTINGS: dict[str, Any] = {"deadline": None, "derandomize": True, "database": None}


def _one_in(odds: int, rare: bool) -> S[bool]:
    """`rare` about once in `odds + 1` draws. It sits in the middle of the choices: Hypothesis
    favours the ends of a range, and shrinks towards the first."""
    half = odds // 2
    return st.sampled_from([not rare] * half + [rare] + [not rare] * (odds - half))


def mostly(good: S[Any], bad: S[Any], odds: int = 14) -> S[Any]:
    """`good` about `odds` times in `odds + 1`, else `bad`; shrinks towards `good`."""
    return _one_in(odds, True).flatmap(lambda b: bad if b else good)


def keep(odds: int = 9) -> S[bool]:
    """True about `odds` times in `odds + 1`; shrinks to True (the field kept)."""
    return _one_in(odds, False)


# Text that has broken proxies before: control characters, bidi marks, line separators
# that are not SSE's, SSE framing; then lengths on either side of ERNIE's limits, and lone
# surrogates (invalid JSON text once encoded).
TRICKY_TEXTS = [
    "",
    " ",
    "Привет",
    "你好",
    "🙂👍🏽",
    "\x00",
    "\u202e\u200b\ufeff",
    "line\u2028separator\x85next line",
    "null",
    "{}",
    '{"a": 1}',
    "[DONE]",
    "\r\n\r\ndata: [DONE]\n\n",
    "event: error\ndata: {}",
]


class Long(str):
    """A long text that a failing example prints as the expression that made it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{self[:1]!r} * {len(self)}"


huge_texts = st.sampled_from([4800, 4801, 20_001, 60_000]).map(lambda n: Long("ж" * n))
lone_surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)
texts: S[str] = mostly(
    st.one_of(st.text(max_size=30), st.sampled_from(TRICKY_TEXTS)),
    st.one_of(huge_texts, lone_surrogates),
    odds=20,
)
short_texts: S[str] = st.one_of(st.text(max_size=12), st.sampled_from(TRICKY_TEXTS))

FIELD_NAMES = [
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "name",
    "function",
    "arguments",
    "tool_calls",
    "id",
    "choices",
    "message",
    "delta",
    "usage",
    "result",
    "error",
    "error_code",
]
keys: S[str] = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8))
numbers: S[Any] = st.one_of(
    st.integers(),
    st.floats(),  # NaN and the infinities included: json.dumps writes them as NaN, Infinity
    st.sampled_from([10**30, -(10**30), 2**63, 1e308, -0.0]),
)
scalars: S[Any] = st.one_of(st.none(), st.booleans(), numbers, short_texts)
junk: S[Any] = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=3)
    ),
    max_leaves=8,
)
"""Any JSON value, nested junk included."""


def with_junk_keys(body: S[dict[str, Any]]) -> S[dict[str, Any]]:
    """Sometimes a few unknown or duplicate-named keys more."""
    extra = mostly(st.just({}), st.dictionaries(keys, junk, max_size=2), odds=4)
    return st.tuples(body, extra).map(lambda pair: {**pair[1], **pair[0]})


def encode(body: Any, ascii_only: bool) -> bytes:
    """A JSON body as bytes; lone surrogates pass as they are (invalid UTF-8)."""
    return json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# ---- native requests ----------------------------------------------------------------

NATIVE_MODELS = {
    "chatgpt": ["gpt-4o-mini", "gpt-4o"],
    "gigachat": ["GigaChat", "GigaChat-Pro"],
    "ernie": ["ernie-4.0-8k", "ernie-speed-128k", "ernie-lite-8k", "custom-endpoint"],
    "local": ["qwen"],
}
bad_names: S[Any] = st.one_of(
    st.sampled_from(["", "a b", "x" * 129, "../../oauth/2.0/token", "a/b", "модель", "a\nb"]),
    junk,
)
roles = st.sampled_from(["user", "assistant", "system"])
bad_roles: S[Any] = st.one_of(
    st.sampled_from(["tool", "function", "developer", "USER", "", "bot"]), junk
)


@st.composite
def native_message(draw: st.DrawFn) -> Any:
    message: dict[str, Any] = {}
    if draw(keep(30)):
        message["role"] = draw(mostly(roles, bad_roles))
    if draw(keep(30)):
        message["content"] = draw(mostly(texts, junk))
    return draw(mostly(with_junk_keys(st.just(message)), junk, odds=15))


def stop_values() -> S[Any]:
    good = st.one_of(st.none(), short_texts, st.lists(short_texts, max_size=6))
    return mostly(good, junk)


@st.composite
def native_body(draw: st.DrawFn, provider: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if draw(keep(3)):
        body["model"] = draw(mostly(st.sampled_from(NATIVE_MODELS[provider]), bad_names))
    if draw(keep(30)):
        body["messages"] = draw(
            mostly(
                st.lists(native_message(), min_size=1, max_size=6),
                st.one_of(st.just([]), junk),
                odds=20,
            )
        )
    optional: dict[str, S[Any]] = {
        "temperature": mostly(
            st.floats(0, 2), st.one_of(st.floats(), st.sampled_from([-0.1, 2.01]), junk)
        ),
        "top_p": mostly(st.floats(0, 1, exclude_min=True), st.one_of(st.floats(), junk)),
        "max_tokens": mostly(
            st.integers(1, 5000), st.one_of(st.integers(max_value=0), st.just(10**30), junk)
        ),
        "stop": stop_values(),
        "stream": mostly(st.booleans(), junk),
    }
    for key, strategy in optional.items():
        if draw(keep(1)):
            body[key] = draw(strategy)
    if not draw(keep(5)):  # rarely: without a history store it is always refused
        body["conversation_id"] = draw(mostly(st.sampled_from(["conv-1", "a:b/c"]), bad_names))
    return draw(with_junk_keys(st.just(body)))


# ---- OpenAI-shaped requests (/v1/chat/completions) ------------------------------------

V1_MODELS = [
    "gpt-4o-mini",
    "chatgpt/gpt-4o",
    "openai/gpt-4o-mini",
    "gigachat/GigaChat",
    "gigachat/GigaChat-Pro",
    "GigaChat-Max",
    "ernie/ernie-4.0-8k",
    "ernie/ernie-speed-128k",
    "ernie-3.5-8k",
    "local/qwen",
    "unknown-model",
    "gigachat/",
]
CALL_IDS = ["call_1", "call_2"]
FUNCTION_NAMES = ["forecast", "get_time"]
# Tool fields break more often than the rest: that is where the translation to GigaChat is.
TOOL_ODDS = 4
call_ids: S[Any] = mostly(st.sampled_from(CALL_IDS), st.one_of(st.just(""), junk), TOOL_ODDS)
function_names: S[Any] = mostly(
    st.sampled_from(FUNCTION_NAMES), st.one_of(short_texts, junk), TOOL_ODDS
)
parameters: S[Any] = mostly(
    st.just({"type": "object", "properties": {"city": {"type": "string"}}}),
    st.one_of(st.just({}), junk),
    TOOL_ODDS,
)
function_definitions: S[Any] = mostly(
    st.fixed_dictionaries(
        {"name": function_names, "parameters": parameters},  # GigaChat wants both
        optional={"description": short_texts, "strict": junk},
    ),
    st.one_of(st.sampled_from(["x", 5, {}]), junk),
    TOOL_ODDS,
)
"""A `functions` entry, or a `tools` entry's `function`."""
tools: S[Any] = mostly(
    st.fixed_dictionaries(
        {
            "type": mostly(st.just("function"), junk, TOOL_ODDS),
            "function": function_definitions,
        }
    ),
    st.one_of(
        st.sampled_from([5, "x", None, [], {}, {"type": "function"}, {"function": {"name": "f"}}]),
        junk,
    ),
    TOOL_ODDS,
)
tool_choices: S[Any] = mostly(
    st.one_of(
        st.sampled_from(["auto", "none", "required"]),
        st.fixed_dictionaries(
            {
                "type": mostly(st.just("function"), junk, TOOL_ODDS),
                "function": mostly(
                    st.fixed_dictionaries({"name": function_names}), junk, TOOL_ODDS
                ),
            }
        ),
    ),
    st.one_of(st.sampled_from([{"function": "x"}, {"name": "forecast"}, {}, "any", 5]), junk),
    TOOL_ODDS,
)
function_calls: S[Any] = mostly(
    st.one_of(st.sampled_from(["auto", "none"]), st.fixed_dictionaries({"name": function_names})),
    junk,
    TOOL_ODDS,
)
arguments: S[Any] = mostly(
    st.one_of(
        st.sampled_from(['{"city": "Москва"}', "{}", ""]),
        st.dictionaries(st.text(max_size=5), scalars, max_size=3).map(json.dumps),
    ),
    st.one_of(st.sampled_from(["not json", "[1]", "null", '"s"', "5", "{"]), junk),
    TOOL_ODDS,
)
tool_call: S[Any] = mostly(
    st.fixed_dictionaries(
        {
            "id": call_ids,
            "type": mostly(st.just("function"), junk, TOOL_ODDS),
            "function": mostly(
                st.fixed_dictionaries(
                    {"name": function_names, "arguments": arguments}, optional={"extra": junk}
                ),
                st.one_of(st.just("x"), junk),
                TOOL_ODDS,
            ),
        }
    ),
    st.one_of(st.just("x"), junk),
    TOOL_ODDS,
)
tool_calls: S[Any] = mostly(
    st.lists(tool_call, min_size=1, max_size=1),
    st.one_of(st.lists(tool_call, min_size=2, max_size=2), st.just([]), junk),
    TOOL_ODDS,
)


def content_parts() -> S[Any]:
    text = st.fixed_dictionaries({"type": st.just("text"), "text": texts})
    other = st.one_of(
        st.just({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}),
        st.just({"type": "text"}),
        st.fixed_dictionaries({"type": st.just("text"), "text": junk}),
        st.fixed_dictionaries({"type": junk}),
        junk,
    )
    return st.lists(mostly(text, other), max_size=3)


def contents() -> S[Any]:
    return mostly(st.one_of(texts, content_parts(), st.none()), junk)


V1_ROLES = ["user", "system", "developer", "assistant", "tool", "function"]


@st.composite
def v1_message(draw: st.DrawFn) -> Any:
    role = draw(mostly(st.sampled_from(V1_ROLES), bad_roles))
    message: dict[str, Any] = {"role": role} if draw(keep(30)) else {}
    if draw(keep(4)):
        message["content"] = draw(contents())
    if role == "assistant" and draw(st.booleans()):
        message["tool_calls"] = draw(tool_calls)
    if role == "tool" and draw(keep()):
        message["tool_call_id"] = draw(call_ids)
    if (role == "function" and draw(keep())) or not draw(keep()):
        message["name"] = draw(function_names)
    return draw(mostly(with_junk_keys(st.just(message)), junk, odds=15))


@st.composite
def tool_exchange(draw: st.DrawFn) -> list[Any]:
    """A user question, an assistant's tool call and its result: the path tools take."""
    ask = {"role": "user", "content": draw(short_texts)}
    call: dict[str, Any] = {"role": "assistant", "content": draw(st.one_of(st.none(), texts))}
    call["tool_calls"] = draw(tool_calls)
    result = {"role": "tool", "tool_call_id": draw(call_ids), "content": draw(contents())}
    tail = draw(st.lists(v1_message(), max_size=2))
    return [ask, call, result, *tail]


def v1_messages() -> S[Any]:
    good = st.one_of(st.lists(v1_message(), min_size=1, max_size=5), tool_exchange())
    return mostly(good, st.one_of(st.just([]), junk), odds=12)


@st.composite
def v1_body(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if draw(keep(30)):
        body["model"] = draw(mostly(st.sampled_from(V1_MODELS), bad_names, odds=20))
    if draw(keep(30)):
        body["messages"] = draw(v1_messages())
    optional: dict[str, S[Any]] = {
        "tools": mostly(st.lists(tools, max_size=3), junk),
        "tool_choice": tool_choices,
        "functions": mostly(st.lists(function_definitions, max_size=2), junk),
        "function_call": function_calls,
        "parallel_tool_calls": mostly(st.booleans(), junk),
        "temperature": mostly(st.floats(0, 2), st.one_of(st.floats(), junk)),
        "top_p": mostly(st.floats(0, 1, exclude_min=True), st.one_of(st.floats(), junk)),
        "max_tokens": mostly(st.integers(1, 5000), st.one_of(st.integers(max_value=0), junk)),
        "max_completion_tokens": mostly(st.integers(1, 5000), junk),
        "n": mostly(st.sampled_from([1, None]), st.one_of(st.integers(), junk)),
        "logprobs": mostly(st.sampled_from([False, None]), st.one_of(st.just(True), junk)),
        "top_logprobs": mostly(st.integers(0, 20), junk),
        "response_format": mostly(
            st.sampled_from([{"type": "text"}, None]),
            st.one_of(
                st.sampled_from(
                    [
                        {"type": "json_object"},
                        {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
                        {},
                    ]
                ),
                junk,
            ),
        ),
        "stream": mostly(st.booleans(), junk),
        "stream_options": mostly(
            st.fixed_dictionaries({"include_usage": st.booleans()}), st.one_of(st.just({}), junk)
        ),
        "stop": stop_values(),
        "seed": mostly(st.integers(), junk),
        "user": mostly(short_texts, junk),
        "presence_penalty": mostly(st.floats(-2, 2), junk),
        "frequency_penalty": mostly(st.floats(-2, 2), junk),
        "logit_bias": mostly(st.dictionaries(st.text(max_size=5), st.floats(-100, 100)), junk),
    }
    for key, strategy in optional.items():
        if draw(st.sampled_from([False, False, True])):
            body[key] = draw(strategy)
    return draw(with_junk_keys(st.just(body)))


GIGACHAT_MODELS = ["gigachat/GigaChat", "gigachat/GigaChat-Pro"]


@st.composite
def tool_body(draw: st.DrawFn) -> dict[str, Any]:
    """A `/v1` body for a GigaChat model that uses tools, its other fields well-formed."""
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(GIGACHAT_MODELS)),
        "messages": draw(
            st.one_of(tool_exchange(), st.lists(v1_message(), min_size=1, max_size=4))
        ),
    }
    if draw(keep(3)):
        body["tools"] = draw(mostly(st.lists(tools, min_size=1, max_size=2), junk, TOOL_ODDS))
    optional = {
        "tool_choice": tool_choices,
        "functions": mostly(st.lists(function_definitions, max_size=2), junk, TOOL_ODDS),
        "function_call": function_calls,
        "stream": st.booleans(),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


# ---- raw bodies -----------------------------------------------------------------------

BROKEN_JSON = [
    b"",
    b"   \n",
    b"{",
    b'{"messages": [',
    b'{"messages": [{"role": "user", "content": "hi"}],}',
    b'{"a": 1}{"b": 2}',
    b"nul",
    b"NaN",
    b'{"messages": NaN}',
    b'{"temperature": Infinity, "messages": [{"role": "user", "content": "hi"}]}',
    b"\xff\xfe{\x00}\x00",
    b'\xef\xbb\xbf{"messages": [{"role": "user", "content": "hi"}]}',
    b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
    b'{"messages": [{"role": "user", "content": "\xc3\x28"}]}',
    b'{"model": "x", "model": 5, "messages": [{"role": "user", "content": "hi"}]}',
    b"[" * 10_000 + b"]" * 10_000,
    b'{"messages": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"messages": [{"role": "user", "content": "' + b"\\" * 5001 + b'"}]}',
]
raw_bodies: S[bytes] = st.one_of(
    st.sampled_from(BROKEN_JSON),
    st.binary(max_size=64),
    st.tuples(junk.filter(lambda v: not isinstance(v, dict)), st.booleans()).map(
        lambda pair: encode(*pair)
    ),
    st.text(max_size=64).map(lambda s: s.encode("utf-16")),
)
"""Bodies that are not JSON objects, or not JSON at all."""


# ---- upstream answers -------------------------------------------------------------------

plain_texts: S[str] = st.one_of(st.text(max_size=30), st.sampled_from(TRICKY_TEXTS))
"""Text every JSON parser takes back as it was (no lone surrogates)."""
counts: S[int] = st.integers(0, 10**6)
bad_counts: S[Any] = st.one_of(
    st.sampled_from([-1, True, 1.5, "5", float("inf"), float("nan"), 10**400, [], {}]), junk
)


@st.composite
def usages(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed usage object."""
    prompt, completion = draw(counts), draw(counts)
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    if draw(st.booleans()):
        usage["total_tokens"] = prompt + completion
    return usage


usage_values: S[Any] = mostly(
    usages(),
    st.one_of(
        st.fixed_dictionaries(
            {}, optional={k: bad_counts for k in ("prompt_tokens", "completion_tokens")}
        ),
        st.fixed_dictionaries({"total_tokens": bad_counts}),
        junk,
    ),
    odds=3,
)
FINISH_REASONS = ["stop", "length", "tool_calls", "content_filter", "function_call"]
finish_reasons: S[Any] = mostly(st.one_of(st.none(), st.sampled_from(FINISH_REASONS)), junk, 3)
upstream_tool_calls: S[Any] = mostly(
    st.lists(
        st.fixed_dictionaries(
            {
                "id": st.sampled_from(CALL_IDS),
                "type": st.just("function"),
                "function": st.fixed_dictionaries(
                    {"name": st.sampled_from(FUNCTION_NAMES), "arguments": arguments}
                ),
            }
        ),
        max_size=2,
    ),
    junk,
    odds=3,
)
function_call_values: S[Any] = mostly(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(FUNCTION_NAMES),
            "arguments": st.one_of(
                st.dictionaries(st.text(max_size=5), scalars, max_size=3), st.just("{}")
            ),
        }
    ),
    st.one_of(st.fixed_dictionaries({"name": junk, "arguments": junk}), junk),
    odds=3,
)


def _answer_message(gigachat: bool) -> S[Any]:
    optional: dict[str, S[Any]] = {
        "role": mostly(st.just("assistant"), junk, 3),
        "tool_calls": upstream_tool_calls,
    }
    if gigachat:
        optional |= {"function_call": function_call_values, "functions_state_id": short_texts}
    good = st.fixed_dictionaries(
        {"content": mostly(st.one_of(plain_texts, st.none()), junk, 3)}, optional=optional
    )
    return mostly(good, junk, odds=3)


def completions(gigachat: bool = False) -> S[Any]:
    """OpenAI's (or GigaChat's) chat.completion objects, each key liable to hold junk."""
    choice = st.fixed_dictionaries(
        {"message": _answer_message(gigachat)},
        optional={"index": mostly(st.just(0), junk, 3), "finish_reason": finish_reasons},
    )
    good = st.fixed_dictionaries(
        {"choices": mostly(st.lists(mostly(choice, junk, 3), max_size=2), junk, 3)},
        optional={
            "id": short_texts,
            "object": st.just("chat.completion"),
            "created": mostly(counts, junk, 3),
            "model": mostly(plain_texts, junk, 3),
            "usage": usage_values,
            "error": junk,
        },
    )
    return mostly(with_junk_keys(good), junk, odds=5)


def chunks(gigachat: bool = False) -> S[Any]:
    """`chat.completion.chunk` objects."""
    delta_optional: dict[str, S[Any]] = {
        "role": st.just("assistant"),
        "content": mostly(st.one_of(plain_texts, st.none()), junk, 3),
        "tool_calls": upstream_tool_calls,
    }
    if gigachat:
        delta_optional["function_call"] = function_call_values
    delta = mostly(st.fixed_dictionaries({}, optional=delta_optional), junk, 3)
    choice = st.fixed_dictionaries(
        {"delta": delta}, optional={"index": st.just(0), "finish_reason": finish_reasons}
    )
    good = st.fixed_dictionaries(
        {"choices": mostly(st.lists(mostly(choice, junk, 3), max_size=2), junk, 3)},
        optional={"id": short_texts, "model": plain_texts, "usage": usage_values, "error": junk},
    )
    return mostly(good, junk, odds=5)


NOT_JSON = ["", "[DONE]", "{", "data: {}", "NaN", "nul", '{"a": 1}{', "[" * 5000 + "]" * 5000]


def event_texts(objects: S[Any]) -> S[str]:
    """What an SSE `data:` line may hold: the objects as JSON, or not JSON at all."""
    return mostly(
        st.tuples(objects, st.booleans()).map(
            lambda pair: json.dumps(pair[0], ensure_ascii=pair[1])
        ),
        st.one_of(st.sampled_from(NOT_JSON), st.text(max_size=20)),
        odds=5,
    )


ernie_errors: S[Any] = st.fixed_dictionaries(
    {"error_code": mostly(st.sampled_from([110, 111, 18, 336003, 336100, 6, 1]), junk, 3)},
    optional={"error_msg": mostly(short_texts, junk, 3)},
)


def ernie_answers(stream: bool = False) -> S[Any]:
    """ERNIE's answers (a stream's events when `stream`), and its errors sent with HTTP 200."""
    flags = mostly(st.booleans(), junk, 3)
    optional: dict[str, S[Any]] = {
        "id": short_texts,
        "object": st.just("chat.completion"),
        "created": counts,
        "is_truncated": flags,
        "need_clear_history": flags,
        "usage": usage_values,
    }
    if stream:
        optional |= {"sentence_id": counts, "is_end": flags}
    good = st.fixed_dictionaries({"result": mostly(plain_texts, junk, 3)}, optional=optional)
    return mostly(with_junk_keys(good), st.one_of(ernie_errors, junk), odds=4)
