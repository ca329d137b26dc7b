"""The error tree; one middleware renders every one of these as JSON.

ChatProxyError (500 internal_error)
├── InvalidRequestError (400 invalid_request_error)
├── AuthenticationError (401 authentication_error)
├── NotFoundError (404 not_found)
├── MethodNotAllowedError (405 method_not_allowed)
├── RequestTimeoutError (408 request_timeout) — a body slower than CLIENT_BODY_TIMEOUT
├── PayloadTooLargeError (413 payload_too_large)
├── RateLimitError (429 rate_limit_exceeded) — the proxy's own limits (local queue full)
├── ServiceUnavailableError (503 service_unavailable) — not configured, loading, stopping
└── UpstreamError (502 upstream_error)
    ├── UpstreamConnectionError (502) — refused, reset, DNS
    ├── UpstreamResponseError (502) — an answer that does not parse
    ├── UpstreamTimeoutError (504 upstream_timeout)
    └── UpstreamStatusError (502) — the provider answered with an error
        ├── UpstreamBadRequestError (400) — the request was wrong; upstream's message kept
        ├── UpstreamAuthError (502) — the provider rejected chatproxy's credentials
        └── UpstreamRateLimitError (429) — Retry-After passed on
"""

from __future__ import annotations


class ChatProxyError(Exception):
    """Base of every error chatproxy answers with."""

    status = 500
    type = "internal_error"

    def __init__(
        self, message: str, *, param: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after


class InvalidRequestError(ChatProxyError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(ChatProxyError):
    status = 401
    type = "authentication_error"


class NotFoundError(ChatProxyError):
    status = 404
    type = "not_found"


class MethodNotAllowedError(ChatProxyError):
    status = 405
    type = "method_not_allowed"


class RequestTimeoutError(ChatProxyError):
    status = 408
    type = "request_timeout"


class PayloadTooLargeError(ChatProxyError):
    status = 413
    type = "payload_too_large"


class RateLimitError(ChatProxyError):
    status = 429
    type = "rate_limit_exceeded"


class ServiceUnavailableError(ChatProxyError):
    status = 503
    type = "service_unavailable"


class UpstreamError(ChatProxyError):
    status = 502
    type = "upstream_error"


class UpstreamConnectionError(UpstreamError):
    type = "upstream_connection_error"


class UpstreamResponseError(UpstreamError):
    type = "upstream_bad_response"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    type = "upstream_timeout"


class UpstreamStatusError(UpstreamError):
    type = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        upstream_message: str = "",
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, param=param, retry_after=retry_after)
        self.upstream_status = upstream_status
        self.upstream_message = upstream_message


class UpstreamBadRequestError(UpstreamStatusError):
    status = 400
    type = "invalid_request_error"


class UpstreamAuthError(UpstreamStatusError):
    type = "upstream_auth_error"


class UpstreamRateLimitError(UpstreamStatusError):
    status = 429
    type = "rate_limit_exceeded"
