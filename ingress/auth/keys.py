"""Virtual keys and teams in NATS KV, mirrored in memory so authentication does no I/O.

Every replica watches both buckets and applies each change to its mirror as it arrives, so
a revoke written by one replica reaches every other within milliseconds. Writes go to KV
with compare-and-set on the entry's revision, so two replicas (or a revoke and a
``last_used_at`` flush) never overwrite each other's change. A replica also applies its own
writes to its mirror at once, so a key it just created works on the next request; the
revision numbers make the watch's later copy of the same write a no-op.

``last_used_at`` is kept in memory and written at most every ``flush_interval`` seconds
per key, because a KV write per request would cost more than the request's own dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TypeVar

import nats.errors
import nats.js.errors
import pydantic
from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import BaseModel, ValidationError

from core import replicas
from core.bucket_watch import BucketWatch
from ingress.auth.principal import Principal
from schemas.keys import (
    KEYS_BUCKET,
    TEAMS_BUCKET,
    KeyCreate,
    KeyUpdate,
    KeyView,
    KeyWithSecret,
    Limits,
    SecretHash,
    Team,
    TeamCreate,
    TeamUpdate,
    VirtualKey,
    hash_secret,
    merge_limits,
    new_secret,
    secret_hint,
)

log = logging.getLogger("aigw.keys")

Clock = Callable[[], datetime]
_M = TypeVar("_M", bound=BaseModel)

# Compare-and-set retries before a write gives up; contention on one key is rare (an admin
# edit racing a last_used flush), so a few attempts are plenty.
_CAS_ATTEMPTS = 5
# What a NATS or KV call raises when the server is unreachable or slow.
NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)


def _utcnow() -> datetime:
    return datetime.now(UTC)


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


class KeyStore:
    def __init__(
        self,
        nc: Client,
        *,
        keys_bucket: str = KEYS_BUCKET,
        teams_bucket: str = TEAMS_BUCKET,
        flush_interval: float = 30.0,
        clock: Clock = _utcnow,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._bucket_names = (keys_bucket, teams_bucket)
        self._flush_interval = flush_interval
        self._clock = clock
        self._keys_kv: KeyValue | None = None
        self._teams_kv: KeyValue | None = None
        # id -> (KV revision, value): the revision orders our own writes against the watch.
        self._keys: dict[str, tuple[int, VirtualKey]] = {}
        self._teams: dict[str, tuple[int, Team]] = {}
        self._by_hash: dict[str, tuple[str, SecretHash]] = {}
        self._used: dict[str, datetime] = {}
        self._watches: list[BucketWatch] = []
        self._flusher: asyncio.Task[None] | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Open (or create) the buckets and return once the mirror holds every entry."""
        self._keys_kv = await self._bucket(self._bucket_names[0])
        self._teams_kv = await self._bucket(self._bucket_names[1])
        # Teams first: a key whose team is not mirrored yet would be refused.
        for kv, name, apply in ((self._teams_kv, self._bucket_names[1], self._apply_team),
                                (self._keys_kv, self._bucket_names[0], self._apply_key)):
            watch = BucketWatch(self._nc, kv, name, apply)
            await watch.start(timeout)
            self._watches.append(watch)
        self._flusher = asyncio.create_task(self._flush_loop())

    async def stop(self) -> None:
        """Write the pending ``last_used_at`` times and stop watching."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        try:
            await self.flush_usage()
        except (KeyStoreError, *NATS_ERRORS) as exc:
            log.warning("last_used_at not written at stop: %s", exc)
        for watch in self._watches:
            await watch.stop()
        self._watches.clear()

    @property
    def following(self) -> bool:
        """Whether both watches still run; a mirror that stopped following would miss
        revokes, so readiness should fail when this is false."""
        return len(self._watches) == 2 and all(w.following for w in self._watches)

    async def _bucket(self, name: str) -> KeyValue:
        try:
            kv = await self._js.key_value(name)
        except nats.js.errors.BucketNotFoundError:
            # Two replicas may race here; creating a stream with an identical config is
            # idempotent in JetStream, so both succeed.
            return await self._js.create_key_value(
                bucket=name, history=5, replicas=replicas.wanted(),
                description="ai-gateway virtual keys and teams",
            )
        await replicas.check(self._js, f"KV_{name}")
        return kv

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

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            try:
                await self.flush_usage()
            except (KeyStoreError, *NATS_ERRORS) as exc:
                log.warning("last_used_at not written, will retry: %s", exc)

    async def flush_usage(self) -> None:
        """Write the pending ``last_used_at`` times to KV."""
        pending, self._used = self._used, {}
        for done, (key_id, used) in enumerate(pending.items()):

            def touch(key: VirtualKey, used: datetime = used) -> VirtualKey:
                if key.last_used_at is not None and key.last_used_at >= used:
                    return key
                return key.model_copy(update={"last_used_at": used})

            try:
                await self._modify_key(key_id, touch)
            except NotFound:
                continue
            except (Conflict, *NATS_ERRORS):
                # Keep this one and the rest for the next round rather than lose them.
                for later_id, later in list(pending.items())[done:]:
                    self._used[later_id] = max(later, self._used.get(later_id, later))
                raise

    def _with_usage(self, key: VirtualKey) -> VirtualKey:
        used = self._used.get(key.id)
        if used is None or (key.last_used_at is not None and key.last_used_at >= used):
            return key
        return key.model_copy(update={"last_used_at": used})

    # ---- keys --------------------------------------------------------------------------

    async def create_key(self, body: KeyCreate) -> KeyWithSecret:
        if body.team_id is not None:
            await self._require_team(body.team_id)
        elif body.role == "team_admin":
            raise InvalidReference("team_id", "a team_admin key needs a team_id")
        secret = new_secret()
        key = VirtualKey(
            alias=body.alias,
            team_id=body.team_id,
            allowed_models=body.allowed_models,
            limits=body.limits,
            expires_at=body.expires_at,
            metadata=body.metadata,
            role=body.role,
            created_at=self._clock(),
            secret_hashes=[SecretHash(hash=hash_secret(secret), hint=secret_hint(secret))],
        )
        revision = await self._kv(self._keys_kv).create(key.id, key.model_dump_json().encode())
        self._put_key(key, revision)
        return _with_secret(key, secret)

    def get_key(self, id: str) -> KeyView:
        held = self._keys.get(id)
        if held is None:
            raise NotFound("key", id)
        return self._with_usage(held[1]).view()

    def list_keys(self, team_id: str | None = None, include_revoked: bool = False) -> list[KeyView]:
        keys = [k for _, k in self._keys.values()
                if (team_id is None or k.team_id == team_id) and (include_revoked or not k.revoked)]
        keys.sort(key=lambda k: (k.created_at, k.id))
        return [self._with_usage(k).view() for k in keys]

    async def update_key(self, id: str, patch: KeyUpdate) -> KeyView:
        if "team_id" in patch.model_fields_set and patch.team_id is not None:
            await self._require_team(patch.team_id)

        def change(key: VirtualKey) -> VirtualKey:
            changed = _patched(key, patch)
            if changed.role == "team_admin" and changed.team_id is None:
                raise InvalidReference("team_id", "a team_admin key needs a team_id")
            return changed

        return self._with_usage(await self._modify_key(id, change)).view()

    async def rotate_key(self, id: str, grace_seconds: int) -> KeyWithSecret:
        """A new secret for the key; the old ones keep working for ``grace_seconds``."""
        secret = new_secret()
        now = self._clock()
        until = now + timedelta(seconds=grace_seconds)

        def change(key: VirtualKey) -> VirtualKey:
            if key.revoked:
                raise Conflict(f"key {id} is revoked; create a new key instead")
            kept = [] if grace_seconds == 0 else [
                s.model_copy(update={"expires_at": min(s.expires_at or until, until)})
                for s in key.secret_hashes if s.valid_at(now)
            ]
            fresh = SecretHash(hash=hash_secret(secret), hint=secret_hint(secret))
            return key.model_copy(update={"secret_hashes": [fresh, *kept]})

        return _with_secret(self._with_usage(await self._modify_key(id, change)), secret)

    async def revoke_key(self, id: str) -> KeyView:
        def change(key: VirtualKey) -> VirtualKey:
            return key if key.revoked else key.model_copy(update={"revoked": True})

        return self._with_usage(await self._modify_key(id, change)).view()

    async def _modify_key(self, id: str, change: Callable[[VirtualKey], VirtualKey]) -> VirtualKey:
        revision, key = await self._modify(self._kv(self._keys_kv), "key", id, VirtualKey, change)
        self._put_key(key, revision)
        return key

    # ---- teams -------------------------------------------------------------------------

    async def create_team(self, body: TeamCreate) -> Team:
        team = Team(
            alias=body.alias,
            limits=body.limits,
            allowed_models=body.allowed_models,
            metadata=body.metadata,
            created_at=self._clock(),
        )
        revision = await self._kv(self._teams_kv).create(team.id, team.model_dump_json().encode())
        self._teams[team.id] = (revision, team)
        return team

    def get_team(self, id: str) -> Team:
        held = self._teams.get(id)
        if held is None:
            raise NotFound("team", id)
        return held[1]

    def list_teams(self) -> list[Team]:
        return sorted((t for _, t in self._teams.values()), key=lambda t: (t.created_at, t.id))

    async def update_team(self, id: str, patch: TeamUpdate) -> Team:
        def change(team: Team) -> Team:
            return _patched(team, patch)

        kv = self._kv(self._teams_kv)
        revision, team = await self._modify(kv, "team", id, Team, change)
        self._teams[id] = (revision, team)
        return team

    async def delete_team(self, id: str) -> None:
        """Delete a team that no live key belongs to. Keys that still name it (revoked ones,
        or one created on another replica a moment ago) are refused at authentication."""
        await self._require_team(id, param=None)
        active = [k.id for _, k in self._keys.values() if k.team_id == id and not k.revoked]
        if active:
            raise Conflict(f"team {id} still has {len(active)} active key(s): revoke them or "
                           f"move them to another team first")
        await self._kv(self._teams_kv).delete(id)
        self._teams.pop(id, None)

    async def _require_team(self, id: str, param: str | None = "team_id") -> None:
        # KV, not the mirror: a team created on another replica a moment ago is valid.
        try:
            await self._kv(self._teams_kv).get(id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            if param is None:
                raise NotFound("team", id) from None
            raise InvalidReference(param, f"no team with id {id!r}") from None
        except nats.js.errors.InvalidKeyError:
            raise (NotFound("team", id) if param is None
                   else InvalidReference(param, f"invalid team id {id!r}")) from None

    # ---- KV ----------------------------------------------------------------------------

    @staticmethod
    def _kv(kv: KeyValue | None) -> KeyValue:
        if kv is None:
            raise RuntimeError("KeyStore.start() was not awaited")
        return kv

    @staticmethod
    async def _modify(
        kv: KeyValue, kind: str, id: str, model: type[_M], change: Callable[[_M], _M]
    ) -> tuple[int, _M]:
        """Read, change and compare-and-set one entry; retry if someone wrote in between."""
        for _ in range(_CAS_ATTEMPTS):
            try:
                entry = await kv.get(id)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError,
                    nats.js.errors.InvalidKeyError):
                raise NotFound(kind, id) from None
            if entry.value is None or entry.revision is None:
                raise NotFound(kind, id)
            try:
                current = model.model_validate_json(entry.value)
            except pydantic.ValidationError:
                # An entry we cannot read is refused by the mirror; it cannot be changed
                # here either, only replaced through the admin API.
                raise NotFound(kind, id) from None
            changed = change(current)
            if changed is current:
                return entry.revision, current
            try:
                revision = await kv.update(id, changed.model_dump_json().encode(),
                                           last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            return revision, changed
        raise Conflict(f"{kind} {id} is being changed concurrently; try again")


def _with_secret(key: VirtualKey, secret: str) -> KeyWithSecret:
    return KeyWithSecret(**key.view().model_dump(), secret=secret)


def _patched(current: _M, patch: BaseModel) -> _M:
    """``current`` with the fields the PATCH body sent: ``null`` clears a field (an empty
    list or dict for collections, no limits for ``limits``); ``limits`` merges by field."""
    update: dict[str, object] = {}
    for name in patch.model_fields_set:
        value = getattr(patch, name)
        if name == "limits":
            value = Limits() if value is None else merge_limits(getattr(current, name), value)
        elif value is None and name in ("allowed_models", "metadata"):
            value = type(getattr(current, name))()
        elif value is None and name == "role":
            value = "user"
        update[name] = value
    return current.model_copy(update=update)
