"""What the key store raises when an admin change cannot be made."""

from __future__ import annotations


class KeyStoreError(Exception):
    pass


class NotFound(KeyStoreError):
    def __init__(self, kind: str, id: str) -> None:
        super().__init__(f"no {kind} with id {id!r}")
        self.kind = kind
        self.id = id


class Conflict(KeyStoreError):
    """The change contradicts the current state (a revoked key, a team still in use)."""


class InvalidReference(KeyStoreError):
    """A field names something that does not exist, such as ``team_id``."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
