"""The OpenAPI 3.1 document, generated from the router and a table of operations.

`GET /openapi.json` walks `app.router` and describes each route from the table in
`chatproxy.openapi.registry`; a test (tests/test_openapi.py) fails when a route of the
router has no entry, or an entry names a route that does not exist.

Adding a route? Register its operation in the module that defines its handler (so the entry
is loaded whenever the route is), keyed by the method and the path exactly as you pass them
to `app.router.add_*` (`{name:regex}` placeholders may stay; a static directory added with
`add_static("/static", ...)` is keyed `/static/{filename}`):

    from chatproxy.openapi import Body, Operation, SseEvent, Stream, operation, register

    @operation("POST", "/query", "Ask a question (the older server's shape)", "compat",
               request=QueryRequest, responses={200: QueryAnswer})
    async def query(request: web.Request) -> web.Response: ...

    # or, for handlers you do not decorate (one handler on several routes, say):
    register(Operation("GET", "/", "The chat page", "page", public=True,
                       responses={200: Body(media_type="text/html",
                                            schema={"type": "string"})}))

- `request`: the pydantic model of the JSON body (or a `Body`: another media type, a raw
  schema, or `Body(one_of=(ModelA, ModelB))` for a body of several shapes).
- `responses`: status -> pydantic model (JSON) or `Body`, for answers that are not errors.
  Errors come from the generator: every operation gets `default` with its envelope
  (`ErrorResponse`, or OpenAI's `{"error": {...}}` under `/v1`), 400/408/413 with a request
  body, 401 when keys are on; `errors=(404, 503)` names more.
- `stream`: for `"stream": true` answers, a `Stream([SseEvent(name, model), ...])`; the
  name is None for bare `data:` events, the model None for any JSON, and
  `SseEvent(None, None, literal="[DONE]")` a fixed text.
- `public=True` only for paths in `middlewares.PUBLIC_PATHS` / `PUBLIC_PREFIXES`.
- `query` / `path_params`: name -> description; path parameters are otherwise found in
  the path and described as strings.
- A method-`*` route (`add_route("*", ...)`) is covered by an entry of any method.
- `hidden=True`: the route exists but is no API (a catch-all that only answers errors).

Shapes that a handler builds as a dict get a response model in
`chatproxy/openapi/models.py` (or next to your handler). `python -m chatproxy.openapi
--check` prints the routes still missing from the table; without `--check`, the document.
"""

from chatproxy.openapi.registry import (
    REGISTRY,
    Body,
    Operation,
    SseEvent,
    Stream,
    openapi_path,
    operation,
    register,
)

__all__ = [
    "REGISTRY",
    "Body",
    "Operation",
    "SseEvent",
    "Stream",
    "openapi_path",
    "operation",
    "register",
]
