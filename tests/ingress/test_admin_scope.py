"""What the master key, a team admin key and a plain key may manage (pure rules)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingress.auth.admin_scope import (
    check_key,
    check_team,
    check_update,
    listed_team,
    may_administer,
    scoped_create,
)
from ingress.auth.principal import MASTER, Principal
from ingress.errors import ApiError
from schemas.keys import KeyCreate, KeyUpdate, KeyView, Limits, Team, VirtualKey

TEAM_A = Team(id="team_a")
ADMIN = Principal(key=VirtualKey(id="key_admin", team_id="team_a", role="team_admin"),
                  team=TEAM_A)
PLAIN = Principal(key=VirtualKey(id="key_plain", team_id="team_a"), team=TEAM_A)
# A team_admin key whose team is gone manages nothing.
ORPHAN = Principal(key=VirtualKey(id="key_orphan", role="team_admin"))


def _view(key_id: str, team: str | None, role: str = "user") -> KeyView:
    return KeyView(id=key_id, alias=None, team_id=team, allowed_models=[], limits=Limits(),
                   expires_at=None, metadata={}, created_at=datetime.now(UTC),
                   last_used_at=None, revoked=False, hint=None, role=role)  # type: ignore[arg-type]


def _refused(call: object, status: int) -> None:
    with pytest.raises(ApiError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.status == status


def test_who_may_administer() -> None:
    assert may_administer(MASTER) and may_administer(ADMIN)
    assert not may_administer(PLAIN) and not may_administer(ORPHAN)
    assert ADMIN.admin_of_team == "team_a" and PLAIN.admin_of_team is None


def test_a_team_admin_creates_user_keys_in_its_own_team_only() -> None:
    assert scoped_create(ADMIN, KeyCreate(alias="x")).team_id == "team_a"
    assert scoped_create(ADMIN, KeyCreate(team_id="team_a")).team_id == "team_a"
    _refused(lambda: scoped_create(ADMIN, KeyCreate(team_id="team_b")), 403)
    _refused(lambda: scoped_create(ADMIN, KeyCreate(role="team_admin")), 403)
    _refused(lambda: scoped_create(PLAIN, KeyCreate()), 403)
    assert scoped_create(MASTER, KeyCreate(role="team_admin", team_id="t")).role == "team_admin"


def test_another_teams_key_does_not_exist_for_a_team_admin() -> None:
    check_key(ADMIN, _view("k1", "team_a"))
    _refused(lambda: check_key(ADMIN, _view("k2", "team_b")), 404)
    _refused(lambda: check_key(ADMIN, _view("k3", None)), 404)
    _refused(lambda: check_key(ADMIN, _view("key_admin", "team_a", "team_admin")), 403)
    check_key(MASTER, _view("k2", "team_b"))


def test_a_team_admin_neither_grants_roles_nor_moves_keys_out() -> None:
    check_update(ADMIN, KeyUpdate(alias="renamed", limits=Limits(rpm=5)))
    check_update(ADMIN, KeyUpdate(team_id="team_a"))
    _refused(lambda: check_update(ADMIN, KeyUpdate(team_id="team_b")), 403)
    _refused(lambda: check_update(ADMIN, KeyUpdate(team_id=None)), 403)
    _refused(lambda: check_update(ADMIN, KeyUpdate(role="team_admin")), 403)
    check_update(MASTER, KeyUpdate(role="team_admin"))


def test_listings_and_teams_are_the_admins_own() -> None:
    assert listed_team(ADMIN, None) == "team_a" and listed_team(ADMIN, "team_b") == "team_a"
    assert listed_team(MASTER, "team_b") == "team_b" and listed_team(MASTER, None) is None
    check_team(ADMIN, "team_a")
    _refused(lambda: check_team(ADMIN, "team_b"), 404)
