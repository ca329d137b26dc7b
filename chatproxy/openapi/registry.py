"""The table of documented operations, keyed by (method, path template)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Any])
# aiohttp's `{name:regex}` placeholders, written in OpenAPI as `{name}`.
_PLACEHOLDER_REGEX = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):[^{}]*(?:\{[^{}]*\}[^{}]*)*\}")


@dataclass(frozen=True, slots=True)
class Body:
    """One response (or request) body: a pydantic model, or a raw JSON schema for a body
    that is not JSON (`text/plain` metrics, an HTML page, a static file). An empty
    `media_type` means no body at all (a 204, a 304)."""

    model: type[BaseModel] | None = None
    media_type: str = "application/json"
    # A raw schema; `$defs` in it (a `model_json_schema()`) become components.
    schema: Mapping[str, Any] | None = None
    description: str = ""
    one_of: Sequence[type[BaseModel]] = ()  # a body that is one of several models


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One kind of Server-Sent Event: its `event:` name (None when the stream sends bare
    `data:` lines, as OpenAI's does) and the model of its `data:` JSON (None: any JSON).
    `literal`: the event's data is this fixed text instead (OpenAI's `[DONE]`)."""

    name: str | None
    model: type[BaseModel] | None
    description: str = ""
    literal: str | None = None


@dataclass(frozen=True, slots=True)
class Stream:
    """A `text/event-stream` answer, sent with status 200 instead of the JSON one."""

    events: Sequence[SseEvent]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Operation:
    """One documented operation. `responses` maps a status to a model or a `Body`; the
    error statuses are added by the generator with the route's error envelope (native or
    OpenAI's), and 401 when keys are on and the route is not public."""

    method: str
    path: str
    summary: str
    tag: str
    description: str = ""
    request: type[BaseModel] | Body | None = None
    request_required: bool = True
    responses: Mapping[int, type[BaseModel] | Body] = field(default_factory=dict)
    stream: Stream | None = None
    # Error statuses worth naming (a history route's 404); every operation also documents
    # `default` with its envelope, and those of a request body (400, 408, 413) and of keys.
    errors: Sequence[int] = ()
    query: Mapping[str, str] = field(default_factory=dict)  # name -> description
    path_params: Mapping[str, str] = field(default_factory=dict)  # name -> description
    public: bool = False
    # Routes that exist but are not an API (a catch-all that only answers errors).
    hidden: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


REGISTRY: dict[tuple[str, str], Operation] = {}


def openapi_path(path: str) -> str:
    """`/history/{conversation_id:.+}` as OpenAPI writes it: `/history/{conversation_id}`."""
    return _PLACEHOLDER_REGEX.sub(r"{\1}", path)


def register(*operations: Operation) -> None:
    """Add operations to the table; registering one twice (a module reloaded) replaces it."""
    for op in operations:
        normalized = Operation(
            **{**_fields(op), "method": op.method.upper(), "path": openapi_path(op.path)}
        )
        REGISTRY[normalized.key] = normalized


def operation(method: str, path: str, summary: str, tag: str, **details: Any) -> Callable[[F], F]:
    """Decorator form of `register`, for a handler that serves one route:

        @operation("GET", "/metrics", "Prometheus metrics", "meta",
                   responses={200: Body(media_type="text/plain", schema={"type": "string"})})
        async def metrics(request: web.Request) -> web.Response: ...

    The description defaults to the handler's docstring.
    """

    def decorate(handler: F) -> F:
        details.setdefault("description", (handler.__doc__ or "").strip())
        register(Operation(method, path, summary, tag, **details))
        return handler

    return decorate


def _fields(op: Operation) -> dict[str, Any]:
    return {name: getattr(op, name) for name in Operation.__dataclass_fields__}
