"""Who is calling. For now the master key; virtual keys build on the same entry point."""

from __future__ import annotations

import hmac

from fastapi import Request

from ingress.errors import ApiError


def presented_key(request: Request) -> str | None:
    """The key from ``Authorization: Bearer``, or the ``x-api-key``/``api-key`` headers that
    the Anthropic and Azure SDKs send."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key") or request.headers.get("api-key")


class Authenticator:
    def __init__(self, master_key: str | None) -> None:
        self._master = master_key.encode() if master_key else None

    @property
    def open(self) -> bool:
        return self._master is None

    def check(self, request: Request) -> None:
        if self._master is None:
            return
        key = presented_key(request)
        if key is None:
            raise ApiError(
                401,
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                type="invalid_request_error",
                code="missing_api_key",
            )
        if not hmac.compare_digest(key.encode(), self._master):
            raise ApiError(
                401,
                f"Incorrect API key provided: {_redact(key)}.",
                type="invalid_request_error",
                code="invalid_api_key",
            )


def _redact(key: str) -> str:
    if len(key) <= 8:
        return "****"
    return f"{key[:3]}...{key[-4:]}"
