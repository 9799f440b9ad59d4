"""Errors as data on the bus.

A worker that fails an attempt sends an :class:`ErrorInfo` in an error frame; the ingress
turns it into OpenAI's error JSON in exactly one place. ``kind`` drives retry and fallback
decisions, ``status`` is what the client sees.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ErrorKind(StrEnum):
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    INVALID_REQUEST = "invalid_request"
    CONTEXT_LENGTH = "context_length"
    CONTENT_POLICY = "content_policy"
    RATE_LIMIT = "rate_limit"
    OVERLOADED = "overloaded"
    SERVER = "server"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    NO_WORKER = "no_worker"
    CANCELLED = "cancelled"


# The OpenAI error ``type`` string and HTTP status each kind maps to by default.
OPENAI_TYPE: dict[ErrorKind, str] = {
    ErrorKind.AUTHENTICATION: "authentication_error",
    ErrorKind.PERMISSION: "permission_error",
    ErrorKind.NOT_FOUND: "invalid_request_error",
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.CONTEXT_LENGTH: "invalid_request_error",
    ErrorKind.CONTENT_POLICY: "invalid_request_error",
    ErrorKind.RATE_LIMIT: "rate_limit_error",
    ErrorKind.OVERLOADED: "server_error",
    ErrorKind.SERVER: "server_error",
    ErrorKind.TIMEOUT: "timeout_error",
    ErrorKind.CONNECTION: "server_error",
    ErrorKind.NO_WORKER: "server_error",
    ErrorKind.CANCELLED: "cancelled",
}

DEFAULT_STATUS: dict[ErrorKind, int] = {
    ErrorKind.AUTHENTICATION: 401,
    ErrorKind.PERMISSION: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.CONTEXT_LENGTH: 400,
    ErrorKind.CONTENT_POLICY: 400,
    ErrorKind.RATE_LIMIT: 429,
    ErrorKind.OVERLOADED: 503,
    ErrorKind.SERVER: 502,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.CONNECTION: 502,
    ErrorKind.NO_WORKER: 503,
    ErrorKind.CANCELLED: 499,
}

RETRYABLE: frozenset[ErrorKind] = frozenset(
    {
        ErrorKind.RATE_LIMIT,
        ErrorKind.OVERLOADED,
        ErrorKind.SERVER,
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION,
        ErrorKind.NO_WORKER,
    }
)
# Errors after which the next deployment of the group may well succeed: transient ones,
# and a deployment's own misconfiguration (a wrong key or model name). A bad request, a
# context that is too long or a refused prompt would fail the same way on its siblings.
FAILOVER: frozenset[ErrorKind] = RETRYABLE | {
    ErrorKind.AUTHENTICATION, ErrorKind.PERMISSION, ErrorKind.NOT_FOUND}


class ErrorInfo(BaseModel):
    """One failed attempt, as the worker saw it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ErrorKind
    message: str
    status: int
    code: str | None = None
    param: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    provider: str | None = None
    upstream_status: int | None = None

    @classmethod
    def of(
        cls,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
        upstream_status: int | None = None,
    ) -> ErrorInfo:
        return cls(
            kind=kind,
            message=message,
            status=status if status is not None else DEFAULT_STATUS[kind],
            code=code,
            param=param,
            retryable=kind in RETRYABLE,
            retry_after=retry_after,
            provider=provider,
            upstream_status=upstream_status,
        )

    @property
    def openai_type(self) -> str:
        return OPENAI_TYPE[self.kind]
