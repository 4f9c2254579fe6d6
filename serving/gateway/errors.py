"""Errors the gateway turns into HTTP answers: a status, a machine-readable code, a message
that says what to fix, and for retryable refusals a Retry-After."""

from __future__ import annotations


class GatewayError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, retry_after: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        if code is not None:
            self.code = code


class BadRequest(GatewayError):
    status = 400
    code = "invalid_request"


class Unauthorized(GatewayError):
    status = 401
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limited"


class BudgetExceeded(GatewayError):
    status = 429
    code = "budget_exceeded"


class Unavailable(GatewayError):
    """A dependency (Redis, the database) is down: retry later. Never reported as 401."""

    status = 503
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int | None = 2, code: str | None = None) -> None:
        super().__init__(message, retry_after=retry_after, code=code)


class UpstreamError(GatewayError):
    """Every backend (and fallback) failed before the first token."""

    status = 502
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
