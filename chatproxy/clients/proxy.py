"""Which forward proxy an upstream call goes through, decided once per host."""

from __future__ import annotations

import logging
import urllib.request
from urllib.request import getproxies_environment

from yarl import URL

log = logging.getLogger(__name__)
PROXY_SCHEMES = frozenset({"http", "https"})  # what aiohttp can talk to as a proxy
_UNKNOWN = object()


class ProxyRules:
    """`UPSTREAM_PROXY` for every call when set; otherwise the environment's `HTTPS_PROXY`,
    `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, read as curl and the openai SDK read them.

    aiohttp's `trust_env` reads the same variables, but on every request and in a thread
    (about 1 ms of CPU each); these are read once, when the server starts, and each host's
    answer is kept.
    """

    def __init__(self, explicit: str | None = None, environment: dict[str, str] | None = None):
        self._explicit = explicit
        self._environment: dict[str, str] = {}
        if explicit is None:
            found = getproxies_environment() if environment is None else environment
            for scheme, value in found.items():
                # `proxy:3128` without a scheme means http, as curl reads it.
                url = value if scheme == "no" or "://" in value else f"http://{value}"
                if scheme != "no" and URL(url).scheme not in PROXY_SCHEMES:
                    log.warning(
                        "%s_proxy is ignored: only http:// and https:// proxies are supported",
                        scheme,
                    )
                    continue
                self._environment[scheme] = url
        self._by_origin: dict[tuple[str, str | None, int | None], str | None] = {}
        # False when no proxy is configured: calls then skip the lookup altogether.
        self.active = explicit is not None or any(key != "no" for key in self._environment)

    def for_url(self, url: str | URL) -> str | None:
        """The proxy for `url`, or None to connect directly."""
        parsed = URL(url)
        origin = (parsed.scheme, parsed.host, parsed.port)
        known = self._by_origin.get(origin, _UNKNOWN)
        if known is not _UNKNOWN:
            return known  # type: ignore[return-value]
        proxy = self._explicit or self._from_environment(parsed)
        self._by_origin[origin] = proxy
        return proxy

    def _from_environment(self, url: URL) -> str | None:
        proxy = self._environment.get(url.scheme) or self._environment.get("all")
        if proxy is None or url.host is None:
            return None
        # urllib's own NO_PROXY matching (suffixes, `*`, host:port), given our snapshot;
        # typeshed does not list it, but it is what urllib.request.proxy_bypass runs here.
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if bypass(f"{url.host}:{url.port}", self._environment):
            return None
        return proxy

    def passwords(self) -> list[str]:
        """Passwords written into proxy URLs, for the log redactor."""
        urls = [self._explicit] if self._explicit else list(self._environment.values())
        return [p for p in (URL(u).password for u in urls if "://" in u) if p]
