"""``/admin/keys`` and ``/admin/teams``: virtual keys and teams, for the master key only.

Mounted under ``/admin``. The router needs two things from the running gateway:
``gateway.keys`` (a :class:`~ingress.keys.KeyStore`) and ``gateway.auth.check(request)``
returning the caller's :class:`~ingress.principal.Principal` (401 for a bad key).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from ingress.errors import ApiError
from ingress.keys import NATS_ERRORS, Conflict, InvalidReference, KeyStore, NotFound
from ingress.principal import Principal
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


def admin_store(request: Request) -> KeyStore:
    """The key store, once the caller is known to hold the master key."""
    gateway = request.app.state.gateway
    principal: Principal = gateway.auth.check(request)
    if not principal.master:
        if principal.key is None:
            raise ApiError(403, "The admin API needs a master key: set "
                           "general_settings.master_key in the config.",
                           type="permission_error", code="admin_disabled")
        raise ApiError(403, "A virtual key cannot manage keys or teams; use the master key.",
                       type="permission_error", code="admin_only")
    store: KeyStore = gateway.keys
    return store


Store = Annotated[KeyStore, Depends(admin_store)]


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
async def create_key(body: KeyCreate, store: Store) -> KeyWithSecret:
    with _store_errors():
        return await store.create_key(body)


@router.get("/keys")
async def list_keys(
    store: Store, team_id: str | None = None, include_revoked: bool = False
) -> KeyList:
    return KeyList(data=store.list_keys(team_id=team_id, include_revoked=include_revoked))


@router.get("/keys/{key_id}")
async def get_key(key_id: str, store: Store) -> KeyView:
    with _store_errors():
        return store.get_key(key_id)


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, body: KeyUpdate, store: Store) -> KeyView:
    with _store_errors():
        return await store.update_key(key_id, body)


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, store: Store) -> KeyView:
    with _store_errors():
        return await store.revoke_key(key_id)


@router.post("/keys/{key_id}/rotate")
async def rotate_key(key_id: str, store: Store, body: RotateRequest | None = None) -> KeyWithSecret:
    grace = body.grace_seconds if body is not None else 0
    with _store_errors():
        return await store.rotate_key(key_id, grace)


# ---- teams -----------------------------------------------------------------------------


@router.post("/teams")
async def create_team(body: TeamCreate, store: Store) -> Team:
    with _store_errors():
        return await store.create_team(body)


@router.get("/teams")
async def list_teams(store: Store) -> TeamList:
    return TeamList(data=store.list_teams())


@router.get("/teams/{team_id}")
async def get_team(team_id: str, store: Store) -> Team:
    with _store_errors():
        return store.get_team(team_id)


@router.patch("/teams/{team_id}")
async def update_team(team_id: str, body: TeamUpdate, store: Store) -> Team:
    with _store_errors():
        return await store.update_team(team_id, body)


@router.delete("/teams/{team_id}")
async def delete_team(team_id: str, store: Store) -> TeamDeleted:
    with _store_errors():
        await store.delete_team(team_id)
    return TeamDeleted(id=team_id)
