"""The router's routes as (method, OpenAPI path), matched against the registry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiohttp import web

from chatproxy.keys import ROOT_PATH
from chatproxy.openapi.registry import Operation, openapi_path

RouteKey = tuple[str, str]
ANY_METHOD = "*"
# aiohttp adds a HEAD route beside every GET one; it is the GET's, not an operation.
_IMPLIED_METHODS = frozenset({"HEAD"})


def router_routes(app: web.Application) -> list[RouteKey]:
    """Every (method, path) the router serves, in registration order, without repeats;
    paths under ROOT_PATH without it (the document's server names it once)."""
    root = app.get(ROOT_PATH) or ""
    seen: dict[RouteKey, None] = {}
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method in _IMPLIED_METHODS:
            continue
        if isinstance(resource, web.StaticResource):
            path = resource.canonical.rstrip("/") + "/{filename}"
        else:
            path = openapi_path(resource.canonical)
        if root and path.startswith(f"{root}/"):
            path = path[len(root) :]
        seen[(route.method, path)] = None
    return list(seen)


def operations_for(route: RouteKey, registry: Mapping[RouteKey, Operation]) -> list[Operation]:
    """The registered operations a route serves: a `*` route serves each method registered
    for its path."""
    method, path = route
    if method != ANY_METHOD:
        found = registry.get(route)
        return [found] if found is not None else []
    return [op for (_, op_path), op in registry.items() if op_path == path]


def undocumented(app: web.Application, registry: Mapping[RouteKey, Operation]) -> list[RouteKey]:
    """Routes of the router with no operation in the table."""
    return [route for route in router_routes(app) if not operations_for(route, registry)]


def nonexistent(app: web.Application, registry: Mapping[RouteKey, Operation]) -> list[RouteKey]:
    """Table entries that no route of this app serves."""
    routes = set(router_routes(app))
    return [key for key in registry if key not in routes and (ANY_METHOD, key[1]) not in routes]


def served_operations(
    app: web.Application, registry: Mapping[RouteKey, Operation]
) -> Iterable[Operation]:
    """The documented operations of this app, in the router's order, each once."""
    seen: dict[RouteKey, Operation] = {}
    for route in router_routes(app):
        for op in operations_for(route, registry):
            if not op.hidden:
                seen.setdefault(op.key, op)
    return seen.values()
