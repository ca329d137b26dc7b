"""`GET /openapi.json`: generated from the router and the table, complete, valid OpenAPI
3.1, and true to what the routes answer (errors, streams, keys)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from chatproxy.app import create_app
from chatproxy.middlewares import PUBLIC_PATHS
from chatproxy.openapi import REGISTRY, Operation
from chatproxy.openapi.__main__ import full_app
from chatproxy.openapi.document import build_document, is_public
from chatproxy.openapi.routes import nonexistent, router_routes, undocumented
from tests.conftest import AiohttpClient, Client, Proxy, make_settings, serve
from tests.fakes.openai_server import FakeOpenAI, status, stream

KEY = "openapi-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
USER = [{"role": "user", "content": "Hi"}]
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
def app(tmp_path: Path) -> web.Application:
    """Keys on and the history layer named: every optional route is registered."""
    return full_app(tmp_path)


def conforms(document: dict[str, Any], schema: Any, instance: Any) -> list[str]:
    """What is wrong with `instance` under `schema`, which may name the components."""
    root = {"allOf": [schema], "components": document["components"]}
    return [error.message for error in OAS31Validator(root).iter_errors(instance)]


def event_conforms(document: dict[str, Any], schema: Any, event: str | None, data: str) -> bool:
    """Whether one Server-Sent Event matches a branch of the stream's schema, its `data`
    text parsed as its branch's `contentSchema` says."""
    for branch in schema["oneOf"]:
        properties = branch["properties"]
        if properties.get("event", {}).get("const") != event:
            continue
        described = properties["data"]
        if "const" in described:
            if data == described["const"]:
                return True
        elif data != "[DONE]" and not conforms(
            document, described.get("contentSchema", {}), json.loads(data)
        ):
            return True
    return False


def raw_events(text: str) -> list[tuple[str | None, str]]:
    """(event name or None, data text) of each event of an SSE body."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        events.append((name, "\n".join(data)))
    return events


def document_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_of_the_router_is_in_the_table(app: web.Application) -> None:
    assert undocumented(app, REGISTRY) == []
    assert nonexistent(app, REGISTRY) == []


def test_the_document_names_exactly_the_routes_of_the_router(app: web.Application) -> None:
    documented = document_operations(build_document(app))
    for method, path in router_routes(app):
        entries = {op.method for op in REGISTRY.values() if op.path == path and not op.hidden}
        hidden = any(op.hidden for op in REGISTRY.values() if op.path == path)
        if method == "*":
            assert entries or hidden, path
            assert {(m, path) for m in entries} <= documented
        else:
            assert (method, path) in documented or hidden, (method, path)
    served = set(router_routes(app))
    for method, path in documented:
        assert (method, path) in served or ("*", path) in served, (method, path)


def test_a_route_added_without_an_entry_is_caught(app: web.Application) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    before = undocumented(app, REGISTRY)
    app.router.add_get("/not-in-the-table/{thing:.+}", handler)
    assert undocumented(app, REGISTRY) == [*before, ("GET", "/not-in-the-table/{thing}")]


def test_an_entry_without_a_route_is_caught(app: web.Application) -> None:
    table = dict(REGISTRY)
    ghost = Operation("GET", "/no-such-route", "ghost", "meta")
    table[ghost.key] = ghost
    assert nonexistent(app, table) == [("GET", "/no-such-route")]


def test_the_document_is_valid_openapi_3_1(app: web.Application) -> None:
    document = build_document(app)
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on an invalid document
    assert "#/$defs/" not in json.dumps(document)  # every reference resolves in the document
    validate(build_document(create_app(make_settings())))  # and without keys or history


def test_under_root_path_the_server_carries_the_prefix(tmp_path: Path) -> None:
    plain = build_document(create_app(make_settings()))
    mounted = build_document(create_app(make_settings(root_path="/prefix/")))
    assert mounted["servers"] == [{"url": "/prefix"}]
    assert mounted["paths"].keys() == plain["paths"].keys()
    validate(mounted)


def test_the_public_flag_agrees_with_the_key_middleware() -> None:
    for op in REGISTRY.values():
        if not op.hidden:
            assert op.public == is_public(op.path), op.key
    assert {"/health", "/openapi.json", "/docs"} <= PUBLIC_PATHS


def test_keys_on_every_non_public_operation_needs_the_bearer_scheme(
    app: web.Application,
) -> None:
    document = build_document(app)
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    for path, item in document["paths"].items():
        for method, op in item.items():
            if is_public(path):
                assert op["security"] == [], (method, path)
                assert "401" not in op["responses"]
            else:
                assert op["security"] == [{"bearerAuth": []}], (method, path)
                assert "401" in op["responses"], (method, path)


def test_keys_off_no_security_is_described() -> None:
    document = build_document(create_app(make_settings()))
    assert "securitySchemes" not in document["components"]
    assert all("security" not in op for item in document["paths"].values() for op in item.values())


def test_the_history_routes_are_described_with_their_path_parameter(
    app: web.Application,
) -> None:
    paths = build_document(app)["paths"]
    show = paths["/history/{conversation_id}"]
    assert set(show) == {"get", "delete"}
    assert [p["name"] for p in show["get"]["parameters"]] == ["conversation_id"]
    assert set(paths["/history/{conversation_id}/model"]) == {"get", "put"}


def test_each_envelope_is_documented_where_it_is_used(app: web.Application) -> None:
    paths = build_document(app)["paths"]

    def envelope(path: str, method: str) -> str:
        schema = paths[path][method]["responses"]["default"]["content"]["application/json"]
        return str(schema["schema"]["$ref"])

    assert envelope("/v1/chat/completions", "post").endswith("/OpenAIErrorResponse")
    assert envelope("/chatgpt/", "post").endswith("/ErrorResponse")
    assert envelope("/history", "post").endswith("/ErrorResponse")


@pytest.fixture
async def keyed(proxy: Proxy) -> Client:
    return await proxy(proxy_api_keys=KEY)


async def test_openapi_json_is_public_and_answers_the_document(keyed: Client) -> None:
    resp = await keyed.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    document = await resp.json()
    validate(document)
    assert "/v1/chat/completions" in document["paths"]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


async def error_schema(client: Client, path: str, method: str, status: str) -> Any:
    document = await (await client.get("/openapi.json")).json()
    responses = document["paths"][path][method]["responses"]
    return document, responses.get(status, responses["default"])["content"]["application/json"]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/v1/chat/completions", {"messages": []}, AUTH, 400),
        ("/chatgpt/", {"messages": []}, AUTH, 400),
        ("/v1/chat/completions", {"model": "x", "messages": USER}, {}, 401),
        ("/chatgpt/", {"messages": USER}, {}, 401),
    ],
)
async def test_real_errors_match_their_documented_envelope(
    keyed: Client, path: str, body: Any, headers: dict[str, str], status: int
) -> None:
    resp = await keyed.post(path, json=body, headers=headers)
    assert resp.status == status
    document, content = await error_schema(keyed, path, "post", str(status))
    assert conforms(document, content["schema"], await resp.json()) == []


async def stream_schema(client: Client, path: str) -> tuple[dict[str, Any], Any]:
    document = await (await client.get("/openapi.json")).json()
    content = document["paths"][path]["post"]["responses"]["200"]["content"]
    return document, content["text/event-stream"]["schema"]


@pytest.mark.parametrize("fails", [False, True])
async def test_native_stream_events_match_the_document(
    proxy: Proxy, fake_openai: FakeOpenAI, fails: bool
) -> None:
    client = await proxy()
    # Without `[DONE]` the upstream's stream is cut short: chatproxy ends with an error.
    fake_openai.queue(stream(["Hel", "lo"], done=not fails, usage=not fails))
    resp = await client.post("/chatgpt/", json={"messages": USER, "stream": True})
    events = raw_events(await resp.text())
    document, schema = await stream_schema(client, "/chatgpt/")
    names = [name for name, _ in events]
    assert names[0] == "delta"
    assert names[-1] == ("error" if fails else "done")
    for name, data in events:
        assert event_conforms(document, schema, name, data), (name, data)
    # An event the document does not describe is refused: the check can fail.
    assert not event_conforms(document, schema, "delta", '{"text": "x"}')
    assert not event_conforms(document, schema, None, '{"content": "x"}')


async def test_openai_stream_events_match_the_document(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    fake_openai.queue(stream(["Hel", "lo"]))
    resp = await client.post(
        "/v1/chat/completions",
        json={
            "model": "chatgpt/gpt-4o-mini",
            "messages": USER,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    events = raw_events(await resp.text())
    document, schema = await stream_schema(client, "/v1/chat/completions")
    assert events[-1] == (None, "[DONE]")
    assert any('"usage"' in data for _, data in events)
    for name, data in events:
        assert event_conforms(document, schema, name, data), data
    assert not event_conforms(document, schema, None, '{"object": "nope"}')


async def test_an_upstream_failure_before_a_stream_is_an_openai_error(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    fake_openai.queue(status(500))
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": "chatgpt/gpt-4o-mini", "messages": USER, "stream": True},
    )
    document, _ = await stream_schema(client, "/v1/chat/completions")
    responses = document["paths"]["/v1/chat/completions"]["post"]["responses"]
    content = responses.get(str(resp.status), responses["default"])["content"]
    assert conforms(document, content["application/json"]["schema"], await resp.json()) == []


async def test_an_openai_stream_cut_short_ends_with_a_documented_error_event(
    proxy: Proxy, fake_openai: FakeOpenAI
) -> None:
    client = await proxy()
    fake_openai.queue(stream(["Hel"], done=False, usage=False))
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": "chatgpt/gpt-4o-mini", "messages": USER, "stream": True},
    )
    events = raw_events(await resp.text())
    document, schema = await stream_schema(client, "/v1/chat/completions")
    assert '"error"' in events[-2][1] and events[-1] == (None, "[DONE]")
    for name, data in events:
        assert event_conforms(document, schema, name, data), data


async def test_history_answers_match_the_document(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    settings = make_settings(history_store=f"sqlite:///{tmp_path / 'h.db'}")
    client = await serve(aiohttp_client, settings)
    document = await (await client.get("/openapi.json")).json()

    async def check(method: str, url: str, path: str, **kwargs: Any) -> Any:
        resp = await client.request(method, url, **kwargs)
        body = await resp.json()
        responses = document["paths"][path][method.lower()]["responses"]
        assert str(resp.status) in responses, (method, url, resp.status)
        schema = responses[str(resp.status)]["content"]["application/json"]["schema"]
        assert conforms(document, schema, body) == [], (method, url, body)
        return body

    created = await check("POST", "/history", "/history", json={"model": "chatgpt/gpt-4o"})
    cid = created["conversation_id"]
    await check("GET", f"/history/{cid}", "/history/{conversation_id}")
    await check("GET", f"/history/{cid}/model", "/history/{conversation_id}/model")
    await check(
        "PUT",
        f"/history/{cid}/model",
        "/history/{conversation_id}/model",
        json={"model": "gigachat/GigaChat"},
    )
    await check("DELETE", f"/history/{cid}", "/history/{conversation_id}")
    await check("GET", f"/history/{cid}", "/history/{conversation_id}")  # now a 404


async def test_meta_answers_match_the_document(proxy: Proxy) -> None:
    client = await proxy()
    document = await (await client.get("/openapi.json")).json()
    for url, path in [
        ("/health", "/health"),
        ("/ready", "/ready"),
        ("/status", "/status"),
        ("/models", "/models"),
        ("/v1/models", "/v1/models"),
        ("/chatgpt/models", "/{provider}/models"),
    ]:
        resp = await client.get(url)
        described = document["paths"][path]["get"]["responses"][str(resp.status)]
        schema = described["content"]["application/json"]["schema"]
        assert conforms(document, schema, await resp.json()) == [], url


def test_a_raw_schema_with_defs_is_moved_into_the_components() -> None:
    """`Body(schema=Model.model_json_schema())`: its `#/$defs/` references would point at
    the document's root; they are moved, and a clash of names is resolved."""
    from pydantic import BaseModel

    from chatproxy.openapi.document import _Schemas

    class Message(BaseModel):  # not chatproxy.schemas.Message: another shape, same name
        text: int

    class Wrapper(BaseModel):
        message: Message

    schemas = _Schemas([REGISTRY[("POST", "/chatgpt/")]])
    original = dict(schemas.definitions["Message"])
    adopted = schemas.adopt(Wrapper.model_json_schema())
    assert "$defs" not in json.dumps(adopted)
    renamed = adopted["properties"]["message"]["$ref"]
    assert renamed == "#/components/schemas/Message2"
    assert schemas.definitions["Message2"]["properties"]["text"]["type"] == "integer"
    assert schemas.definitions["Message"] == original


@pytest.mark.parametrize("root", ["", "/api"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/static%2F..%2Fchatgpt/"),
        ("POST", "/docs%2F..%2Fchatgpt/"),
        ("GET", "/static%2F..%2Fv1/models"),
    ],
)
async def test_an_encoded_slash_cannot_make_a_keyed_route_look_public(
    proxy: Proxy, root: str, method: str, path: str
) -> None:
    """The key check reads the path as the router matches it: decoded, `/static/../chatgpt/`
    looks public, while the router (which keeps %2F) hands it to a keyed handler."""
    client = await proxy(proxy_api_keys=KEY, root_path=root)
    resp = await client.request(method, root + path, json={"messages": USER})
    assert resp.status == 401, await resp.text()
