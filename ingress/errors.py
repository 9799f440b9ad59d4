"""OpenAI's error JSON, produced here and nowhere else.

Inside the ingress a failure is an :class:`ApiError` (or an ``ErrorInfo`` from a worker);
the handlers registered by :func:`install` turn every failure, including FastAPI's own,
into ``{"error": {"message", "type", "param", "code"}}`` with the right status. On the
routes of Anthropic's Messages API (:data:`ANTHROPIC_PATHS`) the same failure is
Anthropic's ``{"type": "error", "error": {"type", "message"}}`` instead.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.errors import ErrorInfo

log = logging.getLogger("aigw.ingress")

# The routes whose clients speak Anthropic's Messages API (paths without SERVER_ROOT_PATH).
ANTHROPIC_PATHS = frozenset({"/v1/messages", "/messages", "/v1/messages/count_tokens",
                             "/messages/count_tokens"})

# Anthropic's error type for a status (https://docs.claude.com/en/api/errors); any other
# 4xx is an invalid_request_error and any other 5xx an api_error.
ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def speaks_anthropic(path: str) -> bool:
    return path in ANTHROPIC_PATHS


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    @classmethod
    def from_info(cls, info: ErrorInfo) -> ApiError:
        headers: dict[str, str] = {}
        if info.retry_after is not None:
            headers["retry-after"] = str(max(1, round(info.retry_after)))
        return cls(
            info.status,
            info.message,
            type=info.openai_type,
            code=info.code or (info.kind.value if info.status >= 500 else None),
            param=info.param,
            headers=headers,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def anthropic_body(self) -> dict[str, Any]:
        kind = ANTHROPIC_TYPES.get(self.status) or (
            "api_error" if self.status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": self.message}}

    def anthropic_event(self) -> bytes:
        """The event that ends an Anthropic stream which already started."""
        return b"event: error\ndata: " + json.dumps(self.anthropic_body()).encode() + b"\n\n"

    def to_response(self, anthropic: bool = False) -> Response:
        return Response(
            json.dumps(self.anthropic_body() if anthropic else self.body()).encode(),
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )

    def sse_event(self) -> bytes:
        """The event that ends a stream which already started."""
        return b"data: " + json.dumps(self.body()).encode() + b"\n\n"


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _validation_message(errors: list[Any]) -> tuple[str, str | None]:
    if not errors:
        return "invalid request body", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    return (f"{param}: {first.get('msg')}" if param else str(first.get("msg"))), param


def _anthropic(request: Request) -> bool:
    return speaks_anthropic(request.scope.get("path", ""))


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return response_for(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        message, param = _validation_message(list(exc.errors()))
        return invalid(message, param).to_response(_anthropic(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            err = ApiError(404, f"no route for {request.method} {request.url.path}",
                           code="unknown_url")
        elif exc.status_code == 405:
            err = ApiError(405, f"method {request.method} not allowed for {request.url.path}",
                           code="method_not_allowed")
        else:
            err = ApiError(exc.status_code, str(exc.detail))
        return err.to_response(_anthropic(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return response_for(request, exc)


def response_for(request: Request, exc: Exception) -> Response:
    """The answer to a failed request: an :class:`ApiError`'s own, else a logged 500."""
    if isinstance(exc, ApiError):
        request.state.error_type = exc.code or exc.type
        return exc.to_response(_anthropic(request))
    log.exception("unexpected error on %s %s", request.method, request.url.path,
                  exc_info=exc)
    return ApiError(500, "the gateway failed to handle the request", type="server_error",
                    code="internal_error").to_response(_anthropic(request))
