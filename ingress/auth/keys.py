"""Virtual keys and teams in NATS KV: the buckets, their watches, and the admin writes.

Every replica watches both buckets and applies each change to its mirror
(:class:`~ingress.auth.key_mirror.KeyMirror`) as it arrives, so a revoke written by one
replica reaches every other within milliseconds. Writes go to KV with compare-and-set on the
entry's revision (:mod:`ingress.auth.edits`). A replica also applies its own writes to its
mirror at once, so a key it just created works on the next request.

``last_used_at`` is kept in memory and written at most every ``flush_interval`` seconds
per key, because a KV write per request would cost more than the request's own dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue

from core import replicas
from core.bucket_watch import BucketWatch
from ingress.auth.edits import modify, patched
from ingress.auth.key_errors import Conflict, InvalidReference, KeyStoreError, NotFound
from ingress.auth.key_mirror import Clock, KeyMirror
from schemas.keys import (
    KEYS_BUCKET,
    TEAMS_BUCKET,
    KeyCreate,
    KeyUpdate,
    KeyView,
    KeyWithSecret,
    SecretHash,
    Team,
    TeamCreate,
    TeamUpdate,
    VirtualKey,
    hash_secret,
    new_secret,
    secret_hint,
)

log = logging.getLogger("aigw.keys")

# What a NATS or KV call raises when the server is unreachable or slow.
NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class KeyStore(KeyMirror):
    def __init__(
        self,
        nc: Client,
        *,
        keys_bucket: str = KEYS_BUCKET,
        teams_bucket: str = TEAMS_BUCKET,
        flush_interval: float = 30.0,
        clock: Clock = _utcnow,
    ) -> None:
        super().__init__(clock)
        self._nc = nc
        self._js = nc.jetstream()
        self._bucket_names = (keys_bucket, teams_bucket)
        self._flush_interval = flush_interval
        self._keys_kv: KeyValue | None = None
        self._teams_kv: KeyValue | None = None
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
            changed = patched(key, patch)
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
        revision, key = await modify(self._kv(self._keys_kv), "key", id, VirtualKey, change)
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
            return patched(team, patch)

        kv = self._kv(self._teams_kv)
        revision, team = await modify(kv, "team", id, Team, change)
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


def _with_secret(key: VirtualKey, secret: str) -> KeyWithSecret:
    return KeyWithSecret(**key.view().model_dump(), secret=secret)
