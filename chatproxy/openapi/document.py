"""`build_document(app)`: the OpenAPI 3.1 document of an app, from its router and the
table of operations, with pydantic's JSON schemas as components."""

from __future__ import annotations

import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

import chatproxy.openapi.core  # noqa: F401  (registers the core routes' operations)
from chatproxy import __version__
from chatproxy.keyring import KeyRing
from chatproxy.keys import API_KEYS, ROOT_PATH, SETTINGS
from chatproxy.logs import REQUEST_ID_HEADER
from chatproxy.middlewares import METRICS_PATH, PUBLIC_PATHS, PUBLIC_PREFIXES
from chatproxy.openapi.models import OpenAIErrorResponse
from chatproxy.openapi.registry import REGISTRY, Body, Operation, SseEvent, Stream
from chatproxy.openapi.routes import served_operations
from chatproxy.schemas import ErrorResponse

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"
LOCAL_DEFS = "#/$defs/"
BEARER = "bearerAuth"
BODY_ERRORS = (400, 408, 413)
HEADERS = "#/components/headers/"
RETRY_STATUSES = {"429", "503", "default"}
RESPONSE_HEADERS = {
    "RequestId": {
        "description": "The request's id: the client's own X-Request-ID when it sent a safe "
        "one, else a new one. Log lines of the request carry it.",
        "schema": {"type": "string"},
    },
    "RetryAfter": {
        "description": "Seconds to wait before trying again (rate limits, a provider not "
        "ready yet, shutdown).",
        "schema": {"type": "integer", "minimum": 1},
    },
}
_PATH_PARAMETER = re.compile(r"\{([^{}]+)\}")
TAGS = {
    "chat": "The native chat routes, one per provider.",
    "openai": "OpenAI-compatible routes: the official SDKs work with `base_url=.../v1`.",
    "history": "Server-side conversations (with HISTORY_STORE set).",
    "meta": "Health, readiness, status and model lists.",
    "docs": "This document and its viewers.",
    "compat": "The older servers' routes, served as they were (with HISTORY_STORE set).",
    "page": "The chat page and its files.",
}
ModelKey = tuple[type[BaseModel], JsonSchemaMode]


def is_public(path: str, *, metrics_public: bool = False) -> bool:
    """As the key middleware decides it (its paths are concrete; templates never match)."""
    if metrics_public and path == METRICS_PATH:
        return True
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def keys_on(app: web.Application) -> bool:
    """Keys now, or a key file that may gain some on a reload."""
    ring: KeyRing | None = app.get(API_KEYS)
    return bool(ring) or app[SETTINGS].proxy_api_keys_file is not None


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


def build_document(app: web.Application) -> dict[str, Any]:
    secured = keys_on(app)
    metrics_public = app[SETTINGS].metrics_require_key is False
    operations = list(served_operations(app, REGISTRY))
    schemas = _Schemas(operations)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        public = is_public(op.path, metrics_public=metrics_public)
        described = _operation(op, schemas, secured=secured, public=public)
        paths.setdefault(op.path, {})[op.method.lower()] = described
    components: dict[str, Any] = {"headers": RESPONSE_HEADERS}
    if secured:
        components["securitySchemes"] = {
            BEARER: {
                "type": "http",
                "scheme": "bearer",
                "description": "One of PROXY_API_KEYS, as `Authorization: Bearer <key>`.",
            }
        }
    used_tags = {op.tag for op in operations}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "chatproxy",
            "version": __version__,
            "description": (
                "One HTTP API in front of OpenAI, GigaChat, ERNIE and a local model: native "
                "routes per provider and an OpenAI-compatible `/v1`."
            ),
        },
        "servers": [{"url": app.get(ROOT_PATH) or "/"}],
        "tags": [
            {"name": name, "description": TAGS.get(name, "")}
            for name in sorted(used_tags, key=_tag_order)
        ],
        "paths": paths,
        # Last: adopting the raw schemas of the paths added definitions.
        "components": {**components, "schemas": schemas.definitions},
    }


def _tag_order(tag: str) -> tuple[int, str]:
    """Known tags in TAGS' order, then the others by name."""
    known = list(TAGS)
    return (known.index(tag), "") if tag in known else (len(known), tag)


class _Schemas:
    """Every model the operations name, as one set of components."""

    def __init__(self, operations: list[Operation]) -> None:
        keys: dict[ModelKey, None] = {
            (ErrorResponse, "serialization"): None,
            (OpenAIErrorResponse, "serialization"): None,
        }
        for op in operations:
            for key in _models_of(op):
                keys[key] = None
        refs, defs = models_json_schema(list(keys), ref_template=REF_TEMPLATE)
        self._refs = refs
        self.definitions: dict[str, Any] = defs.get("$defs", {})

    def adopt(self, schema: Mapping[str, Any]) -> Any:
        """A raw schema with its `$defs` moved into the components: in an OpenAPI document
        `#/$defs/...` would point at the document's root, where there are none. A definition
        named as a different component already is gets a name of its own."""
        local = dict(schema)
        definitions: dict[str, Any] = local.pop("$defs", {})
        names: dict[str, str] = {}
        for name, definition in definitions.items():
            final, number = name, 1
            kept = _with_refs(definition, {})
            while final in self.definitions and self.definitions[final] != kept:
                number += 1
                final = f"{name}{number}"
            names[name] = final
        for name, definition in definitions.items():
            self.definitions[names[name]] = _with_refs(definition, names)
        return _with_refs(local, names)

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode = "serialization") -> Any:
        return self._refs[(model, mode)]


def _with_refs(schema: Any, names: Mapping[str, str]) -> Any:
    """`schema` with its `#/$defs/X` references pointing at the components (renamed)."""
    if isinstance(schema, list):
        return [_with_refs(item, names) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str) and value.startswith(LOCAL_DEFS):
            name = value.removeprefix(LOCAL_DEFS)
            out[key] = REF_TEMPLATE.format(model=names.get(name, name))
        else:
            out[key] = _with_refs(value, names)
    return out


def _models_of(op: Operation) -> list[ModelKey]:
    found: list[ModelKey] = []
    if isinstance(op.request, type):
        found.append((op.request, "validation"))
    elif isinstance(op.request, Body) and op.request.model is not None:
        found.append((op.request.model, "validation"))
    if isinstance(op.request, Body):
        found.extend((model, "validation") for model in op.request.one_of)
    for answer in op.responses.values():
        if isinstance(answer, type):
            found.append((answer, "serialization"))
            continue
        if answer.model is not None:
            found.append((answer.model, "serialization"))
        found.extend((model, "serialization") for model in answer.one_of)
    if op.stream is not None:
        found.extend((e.model, "serialization") for e in op.stream.events if e.model)
    return found


def _operation(op: Operation, schemas: _Schemas, *, secured: bool, public: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": _operation_id(op),
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        out["description"] = op.description
    parameters = _parameters(op)
    if parameters:
        out["parameters"] = parameters
    if op.request is not None:
        out["requestBody"] = _request_body(op, schemas)
    out["responses"] = _responses(op, schemas, secured and not public)
    if secured:
        out["security"] = [] if public else [{BEARER: []}]
    return out


def _operation_id(op: Operation) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", op.path).strip("_") or "root"
    suffix = "_slash" if op.path.endswith("/") and op.path != "/" else ""
    return f"{op.method.lower()}_{words}{suffix}"


def _parameters(op: Operation) -> list[dict[str, Any]]:
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": op.path_params.get(name, ""),
        }
        for name in _PATH_PARAMETER.findall(op.path)
    ]
    parameters.extend(
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": text,
        }
        for name, text in op.query.items()
    )
    return parameters


def _request_body(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    request = op.request
    if isinstance(request, type):
        content = {"application/json": {"schema": schemas.ref(request, "validation")}}
    else:
        assert request is not None
        content = {request.media_type: {"schema": _body_schema(request, schemas, "validation")}}
    return {"required": op.request_required, "content": content}


def _body_schema(body: Body, schemas: _Schemas, mode: JsonSchemaMode) -> Any:
    if body.model is not None:
        return schemas.ref(body.model, mode)
    if body.one_of:
        return {"oneOf": [schemas.ref(model, mode) for model in body.one_of]}
    return schemas.adopt(body.schema or {})


def _responses(op: Operation, schemas: _Schemas, needs_key: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, answer in sorted(op.responses.items()):
        body = answer if isinstance(answer, Body) else Body(model=answer)
        described: dict[str, Any] = {"description": body.description or HTTPStatus(status).phrase}
        if body.media_type:  # an empty one: no body (a 204, a 304)
            schema = _body_schema(body, schemas, "serialization")
            described["content"] = {body.media_type: {"schema": schema}}
        responses[str(status)] = described
    if op.stream is not None:
        ok = responses.setdefault("200", {"description": "OK", "content": {}})
        ok["content"]["text/event-stream"] = {"schema": _stream_schema(op.stream, schemas)}
    envelope = schemas.ref(OpenAIErrorResponse if is_openai_path(op.path) else ErrorResponse)
    error_statuses = set(op.errors)
    if op.request is not None:
        error_statuses.update(BODY_ERRORS)
    if needs_key:
        error_statuses.add(401)
    for status in sorted(error_statuses):
        responses.setdefault(str(status), _error(HTTPStatus(status).phrase, envelope))
    responses["default"] = _error("Any other error, in the same envelope", envelope)
    for answer_status, described in responses.items():
        headers = {REQUEST_ID_HEADER: {"$ref": f"{HEADERS}RequestId"}}
        if answer_status in RETRY_STATUSES:
            headers["Retry-After"] = {"$ref": f"{HEADERS}RetryAfter"}
        described["headers"] = headers
    return responses


def _error(description: str, envelope: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": envelope}}}


def _stream_schema(stream: Stream, schemas: _Schemas) -> dict[str, Any]:
    """The schema of one event, as OpenAPI 3.1 reads `schema` under `text/event-stream`
    (3.2's `itemSchema`): the `event` name and the `data` text, whose JSON the
    `contentSchema` describes."""
    return {
        "description": stream.description,
        "oneOf": [_event_schema(event, schemas) for event in stream.events],
    }


def _event_schema(event: SseEvent, schemas: _Schemas) -> dict[str, Any]:
    data: dict[str, Any]
    if event.literal is not None:
        data = {"const": event.literal}
    else:
        data = {"type": "string", "contentMediaType": "application/json"}
        if event.model is not None:
            data["contentSchema"] = schemas.ref(event.model)
    properties: dict[str, Any] = {"data": data}
    required = ["data"]
    if event.name is not None:
        properties = {"event": {"const": event.name}, **properties}
        required.insert(0, "event")
    title = event.name or (event.model.__name__ if event.model else event.literal or "data")
    return {
        "title": title,
        "description": event.description,
        "type": "object",
        "properties": properties,
        "required": required,
    }
