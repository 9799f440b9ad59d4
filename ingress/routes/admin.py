"""``/admin/keys``, ``/admin/teams``, ``/admin/config/reload`` and ``/admin/audit``: for the
master key, and for a team admin key within its own team (:mod:`ingress.auth.admin_scope`).

Mounted under ``/admin``. The router needs from the running gateway:
``gateway.keys`` (a :class:`~ingress.auth.keys.KeyStore`), ``gateway.auth.check(request)``
returning the caller's :class:`~ingress.auth.principal.Principal` (401 for a bad key), and
``app.state.config_reloader`` (an :class:`~ingress.config.reload.ConfigReloader`, or None
without a config file), and ``app.state.audit`` (an :class:`~ingress.audit.AuditTrail`):
every change made here is recorded there, and ``GET /admin/audit`` reads the log back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from core.config_feed import NATS_ERRORS as CONFIG_NATS_ERRORS
from ingress.audit import AuditTrail
from ingress.auth.admin_scope import (
    check_key,
    check_team,
    check_update,
    listed_team,
    may_administer,
    scoped_create,
)
from ingress.auth.key_errors import Conflict, InvalidReference, NotFound
from ingress.auth.keys import NATS_ERRORS, KeyStore
from ingress.auth.principal import Principal
from ingress.config.reload import ConfigReloader
from ingress.errors import ApiError, invalid
from ingress.routes.usage import ask
from schemas.audit import AuditQuery
from schemas.config_doc import ReloadReport
from schemas.keys import (
    KeyCreate,
    KeyList,
    KeyUpdate,
    KeyView,
    KeyWithSecret,
    RotateRequest,
    Team,
    TeamCreate,
    TeamDeleted,
    TeamList,
    TeamUpdate,
)

router = APIRouter()

# The accounting service answers the audit log on the analytics subject of this name.
AUDIT_QUERY = "audit"


def _require_master(request: Request, what: str) -> None:
    principal: Principal = request.app.state.gateway.auth.check(request)
    request.state.principal = principal
    if not principal.master:
        if principal.key is None:
            raise ApiError(403, "The admin API needs a master key: set "
                           "general_settings.master_key in the config.",
                           type="permission_error", code="admin_disabled")
        raise ApiError(403, f"A virtual key cannot {what}; use the master key.",
                       type="permission_error", code="admin_only")


def _require_admin(request: Request) -> Principal:
    """The caller, who holds the master key or a team admin key (admin_scope.py says what
    each may touch)."""
    principal: Principal = request.app.state.gateway.auth.check(request)
    request.state.principal = principal
    if may_administer(principal):
        return principal
    if principal.key is None:
        raise ApiError(403, "The admin API needs a master key: set "
                       "general_settings.master_key in the config.",
                       type="permission_error", code="admin_disabled")
    raise ApiError(403, "A virtual key cannot manage keys or teams; use the master key or a "
                   "team admin key.", type="permission_error", code="admin_only")


def admin_store(request: Request) -> KeyStore:
    """The key store, once the caller is known to hold the master key or a team admin key."""
    _require_admin(request)
    store: KeyStore = request.app.state.gateway.keys
    return store


def master_store(request: Request) -> KeyStore:
    """The key store, once the caller is known to hold the master key."""
    _require_master(request, "manage teams")
    store: KeyStore = request.app.state.gateway.keys
    return store


def _caller(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def admin_reloader(request: Request) -> ConfigReloader:
    """The config reloader, once the caller is known to hold the master key."""
    _require_master(request, "reload the config")
    reloader: ConfigReloader | None = getattr(request.app.state, "config_reloader", None)
    if reloader is None:
        raise ApiError(409, "This ingress was started without a config file (AIGW_CONFIG or "
                       "--config): there is nothing to reload.", code="no_config_file")
    return reloader


def audit_trail(request: Request) -> AuditTrail:
    trail: AuditTrail | None = getattr(request.app.state, "audit", None)
    return trail if trail is not None else AuditTrail(None)


Store = Annotated[KeyStore, Depends(admin_store)]
MasterStore = Annotated[KeyStore, Depends(master_store)]
Reloader = Annotated[ConfigReloader, Depends(admin_reloader)]
Audit = Annotated[AuditTrail, Depends(audit_trail)]


@contextmanager
def _store_errors() -> Iterator[None]:
    """The key store's exceptions as the API's errors."""
    try:
        yield
    except NotFound as exc:
        raise ApiError(404, str(exc), code=f"{exc.kind}_not_found", param="id") from None
    except InvalidReference as exc:
        raise ApiError(400, str(exc), param=exc.param, code="invalid_reference") from None
    except Conflict as exc:
        raise ApiError(409, str(exc), code="conflict") from None
    except NATS_ERRORS as exc:
        raise ApiError(503, f"the key store is unavailable: {exc or type(exc).__name__}",
                       type="server_error", code="key_store_unavailable") from None


# ---- keys ------------------------------------------------------------------------------


@router.post("/keys")
async def create_key(body: KeyCreate, store: Store, request: Request,
                     audit: Audit) -> KeyWithSecret:
    body = scoped_create(_caller(request), body)
    with _store_errors():
        created = await store.create_key(body)
    audit.record(request, "key.create", "key", created.id, None, created)
    return created


@router.get("/keys")
async def list_keys(
    store: Store, request: Request, team_id: str | None = None, include_revoked: bool = False
) -> KeyList:
    team = listed_team(_caller(request), team_id)
    return KeyList(data=store.list_keys(team_id=team, include_revoked=include_revoked))


def _visible_key(request: Request, store: KeyStore, key_id: str) -> KeyView:
    """The key, if the caller may manage it (else a 404, or a 403 for an admin key)."""
    with _store_errors():
        key = store.get_key(key_id)
    check_key(_caller(request), key)
    return key


@router.get("/keys/{key_id}")
async def get_key(key_id: str, store: Store, request: Request) -> KeyView:
    return _visible_key(request, store, key_id)


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, body: KeyUpdate, store: Store, request: Request,
                     audit: Audit) -> KeyView:
    before = _visible_key(request, store, key_id)
    check_update(_caller(request), body)
    with _store_errors():
        after = await store.update_key(key_id, body)
    audit.record(request, "key.update", "key", key_id, before, after)
    return after


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, store: Store, request: Request, audit: Audit) -> KeyView:
    before = _visible_key(request, store, key_id)
    with _store_errors():
        after = await store.revoke_key(key_id)
    audit.record(request, "key.revoke", "key", key_id, before, after)
    return after


@router.post("/keys/{key_id}/rotate")
async def rotate_key(key_id: str, store: Store, request: Request, audit: Audit,
                     body: RotateRequest | None = None) -> KeyWithSecret:
    grace = body.grace_seconds if body is not None else 0
    before = _visible_key(request, store, key_id)
    with _store_errors():
        after = await store.rotate_key(key_id, grace)
    audit.record(request, "key.rotate", "key", key_id, before, after)
    return after


# ---- teams -----------------------------------------------------------------------------


@router.post("/teams")
async def create_team(body: TeamCreate, store: MasterStore, request: Request,
                      audit: Audit) -> Team:
    with _store_errors():
        created = await store.create_team(body)
    audit.record(request, "team.create", "team", created.id, None, created)
    return created


@router.get("/teams")
async def list_teams(store: Store, request: Request) -> TeamList:
    own = _caller(request).admin_of_team
    teams = store.list_teams()
    return TeamList(data=teams if own is None else [t for t in teams if t.id == own])


@router.get("/teams/{team_id}")
async def get_team(team_id: str, store: Store, request: Request) -> Team:
    check_team(_caller(request), team_id)
    with _store_errors():
        return store.get_team(team_id)


@router.patch("/teams/{team_id}")
async def update_team(team_id: str, body: TeamUpdate, store: MasterStore, request: Request,
                      audit: Audit) -> Team:
    with _store_errors():
        before = store.get_team(team_id)
        after = await store.update_team(team_id, body)
    audit.record(request, "team.update", "team", team_id, before, after)
    return after


@router.delete("/teams/{team_id}")
async def delete_team(team_id: str, store: MasterStore, request: Request,
                      audit: Audit) -> TeamDeleted:
    with _store_errors():
        before = store.get_team(team_id)
        await store.delete_team(team_id)
    audit.record(request, "team.delete", "team", team_id, before, None)
    return TeamDeleted(id=team_id)


# ---- config ----------------------------------------------------------------------------


@router.post("/config/reload")
async def reload_config(reloader: Reloader, request: Request, audit: Audit) -> ReloadReport:
    """Re-read the config file now; publish and apply it when it is valid and new."""
    before = reloader.applied_hash
    try:
        result = await reloader.reload()
    except CONFIG_NATS_ERRORS as exc:
        raise ApiError(503, f"NATS is unavailable: {exc or type(exc).__name__}",
                       type="server_error", code="config_store_unavailable") from None
    if result.error is not None:
        raise ApiError(400, f"config reload refused: {result.error}; keeping the current "
                       "config", code="invalid_config")
    audit.record(request, "config.reload", "config", reloader.feed.key,
                 {"config_hash": before}, {"config_hash": result.hash})
    return ReloadReport(applied=result.applied, hash=result.hash, changed=result.changed)


# ---- audit -----------------------------------------------------------------------------


def audit_query(params: dict[str, Any]) -> AuditQuery:
    """The query parameters as an AuditQuery, or a 400 naming the first bad one."""
    try:
        return AuditQuery.model_validate({k: v for k, v in params.items() if v is not None})
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        loc = first.get("loc", ())
        param = str(loc[0]) if loc else None
        message = str(first.get("msg", "invalid query")).removeprefix("Value error, ")
        raise invalid(f"{param}: {message}" if param else message, param=param) from None


@router.get("/audit")
async def list_audit(
    request: Request, actor: str | None = None, action: str | None = None,
    target_kind: str | None = None, target_id: str | None = None,
    since: str | None = None, until: str | None = None, limit: int = 100, offset: int = 0,
    team_id: str | None = None,
) -> Response:
    """The audit log, newest first, from ClickHouse through the accounting service; a
    team admin reads the actions of its own team's keys."""
    principal = _require_admin(request)
    q = audit_query({"actor": actor, "action": action, "target_kind": target_kind,
                     "target_id": target_id, "since": since, "until": until,
                     "limit": limit, "offset": offset,
                     "team_id": principal.admin_of_team or team_id})
    return await ask(request.app.state.gateway, AUDIT_QUERY, q)
