"""``/ui/keys`` and ``/ui/teams``: list, create (the secret shown once), edit limits,
budgets and models, rotate, revoke, delete. Keys: the master key, or a team admin for its
own team's keys (the admin API's rules, :mod:`ingress.auth.admin_scope`); teams: the master
key. Every change goes through the key store the admin API uses, and into the audit log."""

from __future__ import annotations

from typing import Any

import pydantic
from fastapi import APIRouter, Request
from fastapi.responses import Response

from ingress.audit import AuditTrail
from ingress.auth.admin_scope import check_key, check_update, listed_team, scoped_create
from ingress.auth.key_errors import Conflict, InvalidReference, KeyStoreError, NotFound
from ingress.console.guard import Denied, Viewer, admin, gateway_of, key_admin
from ingress.console.pages import context, posted
from ingress.console.paging import Page
from ingress.console.render import page, redirect
from ingress.errors import ApiError
from schemas.audit import Action, TargetKind
from schemas.keys import (
    KeyCreate,
    KeyUpdate,
    KeyView,
    Limits,
    RotateRequest,
    Team,
    TeamCreate,
    TeamUpdate,
)

router = APIRouter()

LIMIT_FIELDS = ("rpm", "tpm", "max_parallel", "daily_budget_usd", "monthly_budget_usd")


class FormError(Exception):
    pass


def _limits(fields: dict[str, str]) -> Limits:
    """Every limit from the form; a blank field is no limit."""
    return Limits.model_validate({f: fields.get(f, "").strip() or None for f in LIMIT_FIELDS})


def _models(fields: dict[str, str]) -> list[str]:
    return [m.strip() for m in fields.get("allowed_models", "").split(",") if m.strip()]


def _text(fields: dict[str, str], name: str) -> str | None:
    return fields.get(name, "").strip() or None


def _validated(build: Any) -> Any:
    try:
        return build()
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise FormError(f"{loc}: {message}" if loc else message) from None


def _store_error(exc: KeyStoreError) -> str:
    if isinstance(exc, NotFound | Conflict | InvalidReference):
        return str(exc)
    return "The key store could not be changed; try again."


# ---- keys ------------------------------------------------------------------------------

def _teams_for(request: Request, found: Viewer) -> list[Team]:
    """The teams a key may be put in: all (master), or the team admin's own."""
    teams = gateway_of(request).keys.list_teams()
    own = found.own_team
    return teams if own is None else [t for t in teams if t.id == own]


def _keys_page(request: Request, found: Viewer, number: int, error: str | None = None,
               status: int = 200) -> Response:
    gateway = gateway_of(request)
    keys = gateway.keys.list_keys(team_id=listed_team(found.principal, None),
                                  include_revoked=True)
    keys.sort(key=lambda k: k.created_at, reverse=True)
    return page(request, "keys.html", status=status, **context(
        found, keys=Page.of(keys, number), teams=_teams_for(request, found), error=error))


def _managed_key(request: Request, found: Viewer, key_id: str) -> KeyView:
    """The key, if the viewer may manage it; else the refusal page."""
    try:
        key = gateway_of(request).keys.get_key(key_id)
        check_key(found.principal, key)
    except NotFound:
        raise Denied("There is no such key.") from None
    except ApiError as exc:
        raise Denied("There is no such key." if exc.status == 404 else exc.message) from None
    return key


@router.get("/keys")
async def keys_list(request: Request, p: int = 1) -> Response:
    found = await key_admin(request)
    return _keys_page(request, found, p)


@router.post("/keys")
async def key_create(request: Request) -> Response:
    found = await key_admin(request)
    fields = await posted(request, found)
    store = gateway_of(request).keys
    try:
        body = _validated(lambda: KeyCreate(
            alias=_text(fields, "alias"), team_id=_text(fields, "team_id"),
            allowed_models=_models(fields), limits=_limits(fields),
            role=fields.get("role") or "user"))
        body = scoped_create(found.principal, body)
        created = await store.create_key(body)
    except FormError as exc:
        return _keys_page(request, found, 1, error=str(exc), status=400)
    except ApiError as exc:
        raise Denied(exc.message) from None
    except KeyStoreError as exc:
        return _keys_page(request, found, 1, error=_store_error(exc), status=400)
    audit(request, found, "key.create", "key", created.id, None, created)
    return page(request, "secret.html", **context(found, key=created, action="created"))


@router.get("/keys/{key_id}")
async def key_edit_page(request: Request, key_id: str) -> Response:
    found = await key_admin(request)
    key = _managed_key(request, found, key_id)
    return page(request, "key_edit.html", **context(found, key=key,
                                                    teams=_teams_for(request, found)))


@router.post("/keys/{key_id}")
async def key_update(request: Request, key_id: str) -> Response:
    found = await key_admin(request)
    fields = await posted(request, found)
    before = _managed_key(request, found, key_id)
    gateway = gateway_of(request)
    try:
        patch = _validated(lambda: KeyUpdate(
            alias=_text(fields, "alias"), team_id=_text(fields, "team_id"),
            allowed_models=_models(fields), limits=_limits(fields),
            **({"role": fields["role"]} if found.is_admin and fields.get("role") else {})))
        check_update(found.principal, patch)
        after = await gateway.keys.update_key(key_id, patch)
    except ApiError as exc:
        raise Denied(exc.message) from None
    except (FormError, KeyStoreError) as exc:
        message = _store_error(exc) if isinstance(exc, KeyStoreError) else str(exc)
        return page(request, "key_edit.html", status=400, **context(
            found, key=before, teams=_teams_for(request, found), error=message))
    audit(request, found, "key.update", "key", key_id, before, after)
    return redirect(request, "/keys")


@router.post("/keys/{key_id}/rotate")
async def key_rotate(request: Request, key_id: str) -> Response:
    found = await key_admin(request)
    fields = await posted(request, found)
    before = _managed_key(request, found, key_id)
    try:
        grace = _validated(lambda: RotateRequest(
            grace_seconds=fields.get("grace_seconds", "").strip() or 0)).grace_seconds
        rotated = await gateway_of(request).keys.rotate_key(key_id, grace)
    except (FormError, KeyStoreError) as exc:
        raise Denied(str(exc)) from None
    audit(request, found, "key.rotate", "key", key_id, before, rotated)
    return page(request, "secret.html", **context(found, key=rotated, action="rotated"))


@router.post("/keys/{key_id}/revoke")
async def key_revoke(request: Request, key_id: str) -> Response:
    found = await key_admin(request)
    await posted(request, found)
    before = _managed_key(request, found, key_id)
    try:
        after = await gateway_of(request).keys.revoke_key(key_id)
    except KeyStoreError as exc:
        raise Denied(str(exc)) from None
    audit(request, found, "key.revoke", "key", key_id, before, after)
    return redirect(request, "/keys")


# ---- teams -----------------------------------------------------------------------------

def _teams_page(request: Request, found: Viewer, number: int, error: str | None = None,
                status: int = 200) -> Response:
    teams = gateway_of(request).keys.list_teams()
    teams.sort(key=lambda t: t.created_at, reverse=True)
    return page(request, "teams.html", status=status,
                **context(found, teams=Page.of(teams, number), error=error))


@router.get("/teams")
async def teams_list(request: Request, p: int = 1) -> Response:
    found = await admin(request)
    return _teams_page(request, found, p)


@router.post("/teams")
async def team_create(request: Request) -> Response:
    found = await admin(request)
    fields = await posted(request, found)
    try:
        body = _validated(lambda: TeamCreate(alias=_text(fields, "alias"),
                                             allowed_models=_models(fields),
                                             limits=_limits(fields)))
        team = await gateway_of(request).keys.create_team(body)
    except FormError as exc:
        return _teams_page(request, found, 1, error=str(exc), status=400)
    except KeyStoreError as exc:
        return _teams_page(request, found, 1, error=_store_error(exc), status=400)
    audit(request, found, "team.create", "team", team.id, None, team)
    return redirect(request, "/teams")


@router.get("/teams/{team_id}")
async def team_edit_page(request: Request, team_id: str) -> Response:
    found = await admin(request)
    try:
        team = gateway_of(request).keys.get_team(team_id)
    except NotFound:
        raise Denied("There is no such team.") from None
    return page(request, "team_edit.html", **context(found, team=team))


@router.post("/teams/{team_id}")
async def team_update(request: Request, team_id: str) -> Response:
    found = await admin(request)
    fields = await posted(request, found)
    store = gateway_of(request).keys
    try:
        before = store.get_team(team_id)
        patch = _validated(lambda: TeamUpdate(alias=_text(fields, "alias"),
                                              allowed_models=_models(fields),
                                              limits=_limits(fields)))
        after = await store.update_team(team_id, patch)
    except NotFound:
        raise Denied("There is no such team.") from None
    except (FormError, KeyStoreError) as exc:
        message = _store_error(exc) if isinstance(exc, KeyStoreError) else str(exc)
        return page(request, "team_edit.html", status=400,
                    **context(found, team=store.get_team(team_id), error=message))
    audit(request, found, "team.update", "team", team_id, before, after)
    return redirect(request, "/teams")


@router.post("/teams/{team_id}/delete")
async def team_delete(request: Request, team_id: str) -> Response:
    found = await admin(request)
    await posted(request, found)
    try:
        before = gateway_of(request).keys.get_team(team_id)
        await gateway_of(request).keys.delete_team(team_id)
    except KeyStoreError as exc:
        raise Denied(str(exc)) from None
    audit(request, found, "team.delete", "team", team_id, before, None)
    return redirect(request, "/teams")


def audit(request: Request, found: Viewer, action: Action, kind: TargetKind, target: str,
          before: Any = None, after: Any = None) -> None:
    """Record an admin action taken in the console in the audit log, as the admin API
    records its own."""
    trail: AuditTrail | None = getattr(request.app.state, "audit", None)
    if trail is not None:
        trail.record(request, action, kind, target, before, after, principal=found.principal)
