"""Behind a gateway and in a browser: the client's address through TRUSTED_PROXIES, every
route under ROOT_PATH, and CORS for CORS_ORIGINS. Each is wired in only when its setting
is on, so an open server pays nothing for them."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, MutableMapping

from aiohttp import web
from aiohttp.typedefs import Middleware

from chatproxy.errors import InvalidRequestError
from chatproxy.logs import forwarded_client_var

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# --- ROOT_PATH --------------------------------------------------------------------------


def normalized_root(root_path: str) -> str:
    """ "" or "/prefix": one leading slash, none trailing."""
    stripped = root_path.strip().strip("/")
    return f"/{stripped}" if stripped else ""


def path_under(root: str, path: str) -> str | None:
    """`path` relative to `root` ("/" for the root itself), None when it lies outside."""
    if not path.startswith(root):
        return None
    rest = path[len(root) :]
    if not rest:
        return "/"
    return rest if rest.startswith("/") else None


def mount_under(app: web.Application, root: str) -> None:
    """Prefix every route registered so far with `root`, as aiohttp's add_subapp does to a
    sub-application's routes, but on the one app: its keys, cleanup contexts, signals and
    the server's drain stay where every handler already looks for them."""
    router = app.router
    for resource in list(router.resources()):
        router.unindex_resource(resource)  # its index key is its first path segment
        resource.add_prefix(root)
        router.index_resource(resource)


async def to_root_page(request: web.Request) -> web.StreamResponse:
    """`/prefix` to `/prefix/`: the chat page's relative addresses resolve under the slash."""
    raise web.HTTPPermanentRedirect(f"{request.path}/")


# --- X-Forwarded-For ----------------------------------------------------------------------


def parse_networks(spec: str) -> tuple[Network, ...]:
    """TRUSTED_PROXIES: comma-separated addresses or CIDR networks."""
    networks = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"TRUSTED_PROXIES: '{item}' is not an IP address or network (e.g. 10.0.0.0/8)"
            ) from None
    return tuple(networks)


def trusted_networks(spec: str) -> tuple[Network, ...]:
    """TRUSTED_PROXIES at start: a wrong entry stops the start with one line, no traceback."""
    try:
        return parse_networks(spec)
    except ValueError as exc:
        raise SystemExit(f"chatproxy: {exc}") from None


def parse_address(text: str) -> Address | None:
    """An address as X-Forwarded-For hops write it: `1.2.3.4`, `1.2.3.4:80`, `[::1]:80`."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class TrustedProxies:
    """Which peers' X-Forwarded-For is believed, and who the client behind them is."""

    def __init__(self, networks: tuple[Network, ...]) -> None:
        self.networks = networks

    def trusts(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded: list[str]) -> str | None:
        """The right-most hop that is not a trusted proxy, walking X-Forwarded-For from the
        peer leftwards while each hop so far is trusted; anything left of the first
        untrusted hop was written by the client and proves nothing."""
        current = parse_address(peer) if peer is not None else None
        if current is None:
            return peer
        for hop in reversed(forwarded):
            if not self.trusts(current):
                break
            claimed = parse_address(hop)
            if claimed is None:  # garbage from a trusted proxy: stop at what is known
                break
            current = claimed
        return str(current)


def client_address(request: web.Request) -> str | None:
    """The client's address: the forwarded one behind TRUSTED_PROXIES, else the peer's."""
    return forwarded_client_var.get() or request.remote


def forwarded_for(trusted: TrustedProxies) -> Middleware:
    """Outermost middleware: the client's address, for per-address limits and the access
    line. Kept beside the request rather than in a clone of it with another `remote`:
    aiohttp prepares an answer with the request it made, and the signals that add headers
    then would see the original, not the clone."""

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        hops = [
            hop
            for header in request.headers.getall("X-Forwarded-For", ())
            for hop in header.split(",")
            if hop.strip()
        ]
        client = trusted.client(request.remote, hops) if hops else request.remote
        token = forwarded_client_var.set(client)
        try:
            return await handler(request)
        finally:
            forwarded_client_var.reset(token)

    return forwarded


# --- CORS ---------------------------------------------------------------------------------

ALLOWED_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
# Asked for when a preflight names none; otherwise the names it asks for are allowed (the
# openai SDK in a browser sends its own x-stainless-* headers), as the origin is checked.
DEFAULT_HEADERS = "Authorization, Content-Type, X-Request-ID, X-Conversation-ID"
EXPOSED_HEADERS = ", ".join(
    [
        "X-Request-ID",
        "Retry-After",
        "Server-Timing",
        *(
            f"x-ratelimit-{what}-{kind}"
            for kind in ("requests", "tokens")
            for what in ("limit", "remaining", "reset")
        ),
    ]
)
MAX_AGE = "600"  # seconds a browser may keep a preflight's answer (Chromium caps at 7200)
_HEADER_NAMES = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


def _origin_key(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


class Cors:
    """CORS_ORIGINS: `*`, or the origins whose pages may call chatproxy. A listed origin is
    echoed with credentials allowed; `*` is sent as `*` and never with credentials, which
    browsers refuse together."""

    def __init__(self, spec: str) -> None:
        items = [_origin_key(item) for item in spec.split(",") if item.strip()]
        self.any = "*" in items
        self.origins = frozenset(items)

    def allows(self, origin: str) -> bool:
        return self.any or _origin_key(origin) in self.origins

    def _allow(self, origin: str, headers: MutableMapping[str, str]) -> None:
        if self.any:
            headers["Access-Control-Allow-Origin"] = "*"
        else:  # echoed as the browser sent it: it compares the two as strings
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Allow-Credentials"] = "true"

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answers a browser's OPTIONS before the key check: a preflight carries no key."""
        origin = request.headers.get("Origin")
        if (
            request.method != "OPTIONS"
            or origin is None
            or "Access-Control-Request-Method" not in request.headers
        ):
            return await handler(request)
        if not self.allows(origin):
            raise InvalidRequestError("CORS: this page's origin is not in CORS_ORIGINS")
        asked = request.headers.get("Access-Control-Request-Headers", "").strip()
        headers = {
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": asked
            if _HEADER_NAMES.match(asked)
            else DEFAULT_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        }
        self._allow(origin, headers)
        return web.Response(status=204, headers=headers)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every answer, errors and streams included, so a page can read what went wrong."""
        headers = response.headers
        if "Access-Control-Allow-Origin" in headers:  # a preflight's own answer
            return
        if not self.any:
            # The answer differs by Origin: a cache must not hand one origin's to another.
            vary = headers.get("Vary")
            headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
        origin = request.headers.get("Origin")
        if origin is not None and self.allows(origin):
            self._allow(origin, headers)
            headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
