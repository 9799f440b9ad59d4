"""Who is calling: the master key, a virtual key, or (with no master key) anybody."""

from __future__ import annotations

import hmac

from fastapi import Request

from ingress.auth.key_mirror import Rejection
from ingress.auth.keys import KeyStore
from ingress.auth.principal import ANONYMOUS, MASTER, Principal
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
    def __init__(self, master_key: str | None, keys: KeyStore | None = None) -> None:
        self._master = master_key.encode() if master_key else None
        self._keys = keys

    @property
    def open(self) -> bool:
        return self._master is None

    def check(self, request: Request) -> Principal:
        """The caller, or an ApiError(401). Reads memory only: no I/O on this path."""
        if self._master is None:
            return ANONYMOUS
        key = presented_key(request)
        if key is None:
            raise ApiError(
                401,
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                code="missing_api_key",
            )
        if hmac.compare_digest(key.encode(), self._master):
            return MASTER
        found = self._keys.check(key) if self._keys is not None else Rejection.UNKNOWN
        if found is Rejection.UNKNOWN:
            raise ApiError(401, f"Incorrect API key provided: {_redact(key)}.",
                           code="invalid_api_key")
        if isinstance(found, Rejection):
            raise ApiError(401, found.message, code=found.value)
        return found


def _redact(key: str) -> str:
    if len(key) <= 8:
        return "****"
    return f"{key[:3]}...{key[-4:]}"
