"""Virtual keys and teams mirrored in memory, so authentication does no I/O.

The mirror applies each change the watch of a bucket delivers, and each write this replica
makes itself at once (so a key it just created works on the next request). Entries carry
their KV revision, which makes the watch's later copy of the same write a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from nats.js.kv import KV_DEL, KV_PURGE
from pydantic import ValidationError

from ingress.auth.principal import Principal
from schemas.keys import SecretHash, Team, VirtualKey, hash_secret

log = logging.getLogger("aigw.keys")

Clock = Callable[[], datetime]


class Rejection(StrEnum):
    """Why a presented secret opens nothing; the value doubles as the error ``code``."""

    UNKNOWN = "invalid_api_key"
    REVOKED = "key_revoked"
    EXPIRED = "key_expired"
    ROTATED = "key_rotated"
    TEAM_MISSING = "team_not_found"

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Rejection.UNKNOWN: "Incorrect API key provided.",
    Rejection.REVOKED: "key revoked",
    Rejection.EXPIRED: "key expired",
    Rejection.ROTATED: "key rotated: this secret was replaced and its grace period has ended",
    Rejection.TEAM_MISSING: "the key's team no longer exists",
}


class KeyMirror:
    """The read side of :class:`~ingress.auth.keys.KeyStore`: who a secret identifies,
    and when each key was last used, from memory."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        # id -> (KV revision, value): the revision orders our own writes against the watch.
        self._keys: dict[str, tuple[int, VirtualKey]] = {}
        self._teams: dict[str, tuple[int, Team]] = {}
        self._by_hash: dict[str, tuple[str, SecretHash]] = {}
        self._used: dict[str, datetime] = {}

    # ---- mirror ------------------------------------------------------------------------

    def _apply_key(self, id: str, value: bytes | None, revision: int, op: str | None) -> None:
        held = self._keys.get(id)
        if held is not None and revision <= held[0]:
            return
        if op in (KV_DEL, KV_PURGE) or not value:
            self._drop_key(id)
            return
        try:
            key = VirtualKey.model_validate_json(value)
        except ValidationError:
            # Fail closed: a key this replica cannot read (a newer schema, a bad write)
            # must not keep working from its last readable version, which may predate a revoke.
            log.error("unreadable key entry %s at revision %d; the key is refused", id, revision)
            self._drop_key(id)
            return
        self._put_key(key, revision)

    def _put_key(self, key: VirtualKey, revision: int) -> None:
        self._drop_key(key.id)
        self._keys[key.id] = (revision, key)
        for secret in key.secret_hashes:
            self._by_hash[secret.hash] = (key.id, secret)

    def _drop_key(self, id: str) -> None:
        held = self._keys.pop(id, None)
        if held is not None:
            for secret in held[1].secret_hashes:
                self._by_hash.pop(secret.hash, None)

    def _apply_team(self, id: str, value: bytes | None, revision: int, op: str | None) -> None:
        held = self._teams.get(id)
        if held is not None and revision <= held[0]:
            return
        if op in (KV_DEL, KV_PURGE) or not value:
            self._teams.pop(id, None)
            return
        try:
            self._teams[id] = (revision, Team.model_validate_json(value))
        except ValidationError:
            # Fail closed as for keys: its keys are refused with "team not found".
            log.error("unreadable team entry %s at revision %d; its keys are refused",
                      id, revision)
            self._teams.pop(id, None)

    # ---- the hot path ------------------------------------------------------------------

    def check(self, secret: str) -> Principal | Rejection:
        """The caller a secret identifies, or why it identifies nobody. No I/O.

        The lookup is by the hash of the presented secret, so its timing can reveal at most
        something about a hash an attacker already chose, never about a stored secret; no
        constant-time comparison is needed on top.
        """
        found = self._by_hash.get(hash_secret(secret))
        if found is None:
            return Rejection.UNKNOWN
        key_id, stored = found
        return self._principal(self._keys[key_id][1], stored)

    def principal_of(self, key_id: str) -> Principal | Rejection:
        """The caller a key id stands for now (a batch item's key when it runs). No I/O."""
        held = self._keys.get(key_id)
        return Rejection.UNKNOWN if held is None else self._principal(held[1], None)

    def _principal(self, key: VirtualKey, stored: SecretHash | None) -> Principal | Rejection:
        now = self._clock()
        key_id = key.id
        if key.revoked:
            return Rejection.REVOKED
        if key.expired(now):
            return Rejection.EXPIRED
        if stored is not None and not stored.valid_at(now):
            return Rejection.ROTATED
        team = None
        if key.team_id is not None:
            held = self._teams.get(key.team_id)
            if held is None:
                return Rejection.TEAM_MISSING
            team = held[1]
        self._used[key_id] = now
        return Principal(key=key, team=team)

    def authenticate(self, secret: str) -> Principal | None:
        found = self.check(secret)
        return found if isinstance(found, Principal) else None

    # ---- last_used_at ------------------------------------------------------------------

    def _with_usage(self, key: VirtualKey) -> VirtualKey:
        used = self._used.get(key.id)
        if used is None or (key.last_used_at is not None and key.last_used_at >= used):
            return key
        return key.model_copy(update={"last_used_at": used})
