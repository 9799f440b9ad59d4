"""KeyStore against a real nats-server: KV buckets, watches and two replicas."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import nats
import pytest
from nats.aio.client import Client

from cli.nats_server import NatsServer
from ingress.auth.key_errors import Conflict, InvalidReference
from ingress.auth.key_mirror import Rejection
from ingress.auth.keys import KeyStore
from ingress.auth.principal import MASTER, Principal, allowed, effective_limits, visible_models
from schemas.keys import (
    KeyCreate,
    KeyUpdate,
    Limits,
    Team,
    TeamCreate,
    TeamUpdate,
    VirtualKey,
    hash_secret,
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


StoreFactory = Callable[..., Awaitable[KeyStore]]


@pytest.fixture
async def connect(nats_server: NatsServer) -> AsyncIterator[Callable[[], Awaitable[Client]]]:
    connections: list[Client] = []

    async def _connect() -> Client:
        nc = await nats.connect(nats_server.url)
        connections.append(nc)
        return nc

    yield _connect
    for nc in connections:
        await nc.close()


@pytest.fixture
async def stores(connect: Callable[[], Awaitable[Client]]) -> AsyncIterator[StoreFactory]:
    """Replicas of one key store: each on its own NATS connection, all on the same
    fresh buckets."""
    suffix = uuid4().hex[:12]
    started: list[KeyStore] = []

    async def _store(**kwargs: object) -> KeyStore:
        store = KeyStore(await connect(), keys_bucket=f"keys_{suffix}",
                         teams_bucket=f"teams_{suffix}", **kwargs)  # type: ignore[arg-type]
        await store.start()
        started.append(store)
        return store

    yield _store
    for store in started:
        await store.stop()


async def _eventually(check: Callable[[], bool], within: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def test_a_created_key_authenticates_by_its_secret(stores: StoreFactory) -> None:
    store = await stores()
    team = await store.create_team(TeamCreate(alias="search"))
    created = await store.create_key(KeyCreate(alias="ci", team_id=team.id))

    assert created.secret.startswith("sk-aigw-") and len(created.secret) == 48
    assert created.id.startswith("key_")
    principal = store.authenticate(created.secret)
    assert principal is not None
    assert principal.key_id == created.id and principal.team_id == team.id
    assert not principal.master


async def test_an_unknown_secret_identifies_nobody(stores: StoreFactory) -> None:
    store = await stores()
    await store.create_key(KeyCreate())
    assert store.check("sk-aigw-" + "x" * 40) is Rejection.UNKNOWN
    assert store.authenticate("sk-aigw-" + "x" * 40) is None


async def test_kv_holds_only_the_hash_of_the_secret(
    stores: StoreFactory, connect: Callable[[], Awaitable[Client]]
) -> None:
    store = await stores()
    created = await store.create_key(KeyCreate(alias="ci"))

    kv = await (await connect()).jetstream().key_value(store._bucket_names[0])
    raw = (await kv.get(created.id)).value
    assert raw is not None
    assert created.secret.encode() not in raw
    assert created.secret[-12:].encode() not in raw
    stored = json.loads(raw)
    assert [s["hash"] for s in stored["secret_hashes"]] == [hash_secret(created.secret)]
    assert stored["schema_version"] == 1


async def test_the_admin_view_never_shows_hashes(stores: StoreFactory) -> None:
    store = await stores()
    created = await store.create_key(KeyCreate())
    for view in (store.get_key(created.id), *store.list_keys(), created):
        dumped = view.model_dump_json()
        assert "secret_hashes" not in dumped
        assert hash_secret(created.secret) not in dumped
    assert store.get_key(created.id).hint == f"sk-aigw-...{created.secret[-4:]}"


async def test_a_revoke_on_one_replica_is_seen_by_another_within_a_second(
    stores: StoreFactory,
) -> None:
    first, second = await stores(), await stores()
    created = await first.create_key(KeyCreate())
    await _eventually(lambda: second.authenticate(created.secret) is not None, within=1.0)

    await first.revoke_key(created.id)

    took = await _eventually(lambda: second.check(created.secret) is Rejection.REVOKED,
                             within=1.0)
    assert took < 1.0
    assert first.check(created.secret) is Rejection.REVOKED
    assert Rejection.REVOKED.message == "key revoked"


async def test_a_replica_started_later_loads_every_existing_entry(stores: StoreFactory) -> None:
    first = await stores()
    team = await first.create_team(TeamCreate(alias="t"))
    keys = [await first.create_key(KeyCreate(team_id=team.id)) for _ in range(3)]

    late = await stores()

    assert all(late.authenticate(k.secret) is not None for k in keys)
    assert [t.id for t in late.list_teams()] == [team.id]


async def test_rotation_keeps_the_old_secret_until_the_grace_period_ends(
    stores: StoreFactory,
) -> None:
    clock = Clock()
    store = await stores(clock=clock)
    created = await store.create_key(KeyCreate())

    rotated = await store.rotate_key(created.id, grace_seconds=60)

    assert rotated.secret != created.secret and rotated.id == created.id
    assert store.authenticate(created.secret) is not None
    assert store.authenticate(rotated.secret) is not None
    clock.advance(59)
    assert store.authenticate(created.secret) is not None
    clock.advance(1)
    assert store.check(created.secret) is Rejection.ROTATED
    assert store.authenticate(rotated.secret) is not None


async def test_rotation_without_grace_retires_the_old_secret_at_once(
    stores: StoreFactory,
) -> None:
    first, second = await stores(), await stores()
    created = await first.create_key(KeyCreate())
    rotated = await first.rotate_key(created.id, grace_seconds=0)

    assert first.check(created.secret) is Rejection.UNKNOWN
    await _eventually(lambda: second.authenticate(rotated.secret) is not None, within=1.0)
    assert second.check(created.secret) is Rejection.UNKNOWN


async def test_a_second_rotation_does_not_extend_the_first_grace_period(
    stores: StoreFactory,
) -> None:
    clock = Clock()
    store = await stores(clock=clock)
    original = await store.create_key(KeyCreate())
    middle = await store.rotate_key(original.id, grace_seconds=10)
    clock.advance(5)
    latest = await store.rotate_key(original.id, grace_seconds=60)

    clock.advance(5)
    assert store.check(original.secret) is Rejection.ROTATED
    assert store.authenticate(middle.secret) is not None
    assert store.authenticate(latest.secret) is not None


async def test_a_revoked_key_cannot_be_rotated(stores: StoreFactory) -> None:
    store = await stores()
    created = await store.create_key(KeyCreate())
    await store.revoke_key(created.id)
    with pytest.raises(Conflict):
        await store.rotate_key(created.id, grace_seconds=0)


async def test_an_expired_key_is_refused(stores: StoreFactory) -> None:
    clock = Clock()
    store = await stores(clock=clock)
    created = await store.create_key(KeyCreate(expires_at=clock.now + timedelta(hours=1)))

    assert store.authenticate(created.secret) is not None
    clock.advance(3600)
    assert store.check(created.secret) is Rejection.EXPIRED
    assert Rejection.EXPIRED.message == "key expired"


async def test_a_key_needs_an_existing_team(stores: StoreFactory) -> None:
    store = await stores()
    with pytest.raises(InvalidReference) as info:
        await store.create_key(KeyCreate(team_id="team_nope"))
    assert info.value.param == "team_id"


async def test_a_team_with_active_keys_cannot_be_deleted(stores: StoreFactory) -> None:
    store = await stores()
    team = await store.create_team(TeamCreate())
    key = await store.create_key(KeyCreate(team_id=team.id))

    with pytest.raises(Conflict):
        await store.delete_team(team.id)
    await store.revoke_key(key.id)
    await store.delete_team(team.id)

    assert store.list_teams() == []
    assert store.check(key.secret) is Rejection.REVOKED


async def test_a_key_whose_team_vanished_is_refused(
    stores: StoreFactory, connect: Callable[[], Awaitable[Client]]
) -> None:
    first, second = await stores(), await stores()
    team = await first.create_team(TeamCreate())
    key = await first.create_key(KeyCreate(team_id=team.id))
    # Deleted behind the store's back, as a race between two replicas could leave it.
    kv = await (await connect()).jetstream().key_value(first._bucket_names[1])
    await kv.delete(team.id)

    await _eventually(lambda: second.check(key.secret) is Rejection.TEAM_MISSING, within=1.0)


async def test_team_changes_reach_the_principal_of_its_keys(stores: StoreFactory) -> None:
    first, second = await stores(), await stores()
    team = await first.create_team(TeamCreate(limits=Limits(rpm=100)))
    key = await first.create_key(KeyCreate(team_id=team.id))
    await first.update_team(team.id, TeamUpdate(limits=Limits(rpm=5)))

    def sees_new_limit() -> bool:
        principal = second.authenticate(key.secret)
        return principal is not None and effective_limits(principal).rpm == 5

    await _eventually(sees_new_limit, within=1.0)


async def test_update_merges_limits_and_null_clears_a_field(stores: StoreFactory) -> None:
    store = await stores()
    created = await store.create_key(KeyCreate(
        alias="a", allowed_models=["m1"], limits=Limits(rpm=10, tpm=1000),
        metadata={"owner": "x"},
    ))

    patch = KeyUpdate.model_validate({"limits": {"tpm": None, "max_parallel": 2},
                                      "alias": None, "allowed_models": None})
    updated = await store.update_key(created.id, patch)

    assert updated.limits == Limits(rpm=10, max_parallel=2)
    assert updated.alias is None and updated.allowed_models == []
    assert updated.metadata == {"owner": "x"}
    assert store.authenticate(created.secret) is not None


async def test_last_used_at_is_kept_in_memory_and_flushed_in_batches(
    stores: StoreFactory, connect: Callable[[], Awaitable[Client]]
) -> None:
    clock = Clock()
    store = await stores(clock=clock, flush_interval=3600)
    created = await store.create_key(KeyCreate())
    kv = await (await connect()).jetstream().key_value(store._bucket_names[0])
    revision = (await kv.get(created.id)).revision

    for _ in range(50):
        assert store.authenticate(created.secret) is not None
        clock.advance(1)

    assert (await kv.get(created.id)).revision == revision  # no write per request
    used = store.get_key(created.id).last_used_at
    assert used == clock.now - timedelta(seconds=1)

    await store.flush_usage()

    entry = await kv.get(created.id)
    assert revision is not None and entry.revision == revision + 1
    assert entry.value is not None
    assert VirtualKey.model_validate_json(entry.value).last_used_at == used


async def test_last_used_flush_does_not_undo_a_revoke(stores: StoreFactory) -> None:
    first, second = await stores(flush_interval=3600), await stores()
    created = await first.create_key(KeyCreate())
    assert first.authenticate(created.secret) is not None
    await second.revoke_key(created.id)

    await first.flush_usage()

    await _eventually(lambda: first.check(created.secret) is Rejection.REVOKED, within=1.0)
    assert second.get_key(created.id).revoked


async def test_an_unreadable_entry_refuses_the_key(
    stores: StoreFactory, connect: Callable[[], Awaitable[Client]]
) -> None:
    store = await stores()
    created = await store.create_key(KeyCreate())
    kv = await (await connect()).jetstream().key_value(store._bucket_names[0])

    await kv.put(created.id, b'{"schema_version": 99}')

    await _eventually(lambda: store.check(created.secret) is Rejection.UNKNOWN, within=1.0)


# ---- principal: limits nesting and model lists -------------------------------------------


def _principal(key: dict[str, object], team: dict[str, object] | None = None) -> Principal:
    return Principal(key=VirtualKey.model_validate(key),
                     team=Team.model_validate(team) if team is not None else None)


def test_a_key_limit_nests_inside_its_team_limit() -> None:
    principal = _principal(
        {"limits": {"rpm": 100, "tpm": 5000, "daily_budget_usd": "5.00"}},
        {"limits": {"rpm": 50, "max_parallel": 4, "daily_budget_usd": "10",
                    "monthly_budget_usd": "100.50"}},
    )
    assert effective_limits(principal) == Limits(
        rpm=50, tpm=5000, max_parallel=4,
        daily_budget_usd=Decimal("5.00"), monthly_budget_usd=Decimal("100.50"),
    )


def test_without_a_team_the_key_limits_apply_and_the_master_has_none() -> None:
    assert effective_limits(_principal({"limits": {"rpm": 7}})) == Limits(rpm=7)
    assert effective_limits(MASTER) == Limits()


def test_allowed_models_are_the_intersection_of_key_and_team_lists() -> None:
    both = _principal({"allowed_models": ["a", "b"]}, {"allowed_models": ["b", "c"]})
    assert [allowed(both, m) for m in "abcd"] == [False, True, False, False]

    team_only = _principal({}, {"allowed_models": ["b", "c"]})
    assert visible_models(team_only, ["a", "b", "c"]) == ["b", "c"]

    key_only = _principal({"allowed_models": ["a"]}, {})
    assert visible_models(key_only, ["a", "b"]) == ["a"]

    assert visible_models(_principal({}), ["a", "b"]) == ["a", "b"]
    assert allowed(MASTER, "anything")
