"""What a caller of the admin API (or the console, or the CLI) may manage.

* The master key: everything.
* A ``team_admin`` key: the ``user`` keys of its own team. It creates keys in its team only,
  sees, edits, rotates and revokes only them, reads its own team (not others), and never
  grants a role, moves a key to another team, or touches another admin key (itself
  included: its own limits are the master key's to set). Teams, config reloads and the
  whole audit log stay with the master key.
* Any other key: nothing.

Another team's key is a 404, as if it did not exist, so a team admin learns nothing of the
other tenants. Pure: no I/O, the caller hands in what the store holds.
"""

from __future__ import annotations

from ingress.auth.principal import Principal
from ingress.errors import ApiError
from schemas.keys import KeyCreate, KeyUpdate, KeyView


def admin_only(what: str) -> ApiError:
    return ApiError(403, f"Only the master key may {what}.", type="permission_error",
                    code="admin_only")


def may_administer(principal: Principal) -> bool:
    return principal.master or principal.admin_of_team is not None


def key_not_found(key_id: str) -> ApiError:
    return ApiError(404, f"key {key_id} not found", code="key_not_found", param="id")


def check_key(principal: Principal, key: KeyView) -> None:
    """``key`` may be read or changed by ``principal``, or an ApiError."""
    if principal.master:
        return
    team = principal.admin_of_team
    if team is None or key.team_id != team:
        raise key_not_found(key.id)
    if key.role != "user":
        raise admin_only("change a team admin key")


def scoped_create(principal: Principal, body: KeyCreate) -> KeyCreate:
    """The key to create: a team admin's always lands in its own team, as a user key."""
    if principal.master:
        return body
    team = principal.admin_of_team
    if team is None:
        raise admin_only("manage keys")
    if body.role != "user":
        raise admin_only("grant a role")
    if body.team_id is not None and body.team_id != team:
        raise ApiError(403, "A team admin creates keys in its own team only.",
                       type="permission_error", code="other_team", param="team_id")
    return body.model_copy(update={"team_id": team})


def check_update(principal: Principal, patch: KeyUpdate) -> None:
    if principal.master:
        return
    sent = patch.model_fields_set
    if "role" in sent:
        raise admin_only("grant or take a role")
    if "team_id" in sent and patch.team_id != principal.admin_of_team:
        raise ApiError(403, "A team admin cannot move a key to another team.",
                       type="permission_error", code="other_team", param="team_id")


def listed_team(principal: Principal, asked: str | None) -> str | None:
    """The team whose keys a listing shows: what was asked for (master), or the admin's
    own team whatever was asked."""
    return asked if principal.master else principal.admin_of_team


def check_team(principal: Principal, team_id: str) -> None:
    if not principal.master and principal.admin_of_team != team_id:
        raise ApiError(404, f"team {team_id} not found", code="team_not_found", param="id")
