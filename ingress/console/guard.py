"""Who is looking at a console page, and what they may do there.

Roles, the same as on the admin API: the master key sees and does everything; a team admin
key manages its own team's keys and sees its team's usage, logs and audit entries; a
virtual key sees its own usage, logs, budget and batches, and the playground. Every page resolves
the session again (a revoked or expired key, or a changed master key, ends it at once), and
every form post checks the session's CSRF token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum

from fastapi import Request

from ingress.auth.key_mirror import Rejection
from ingress.auth.principal import MASTER, Principal
from ingress.console.sessions import Session, SessionStore, digest
from ingress.state import Gateway

COOKIE = "aigw_console"


class Role(StrEnum):
    MASTER = "master"
    TEAM_ADMIN = "team admin"
    KEY = "key"


class SignInNeeded(Exception):
    """No valid session: the browser goes to the sign-in page."""


class Denied(Exception):
    """Signed in, but this page or action is not for this role (or the form is forged)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Viewer:
    principal: Principal
    session: Session
    session_id: str

    @property
    def role(self) -> Role:
        if self.principal.master:
            return Role.MASTER
        return Role.TEAM_ADMIN if self.principal.admin_of_team else Role.KEY

    @property
    def is_admin(self) -> bool:
        """The master key: every page."""
        return self.role is Role.MASTER

    @property
    def manages_keys(self) -> bool:
        """The master key, or a team admin (its own team's keys)."""
        return self.role is not Role.KEY

    @property
    def own_team(self) -> str | None:
        return self.principal.admin_of_team

    @property
    def label(self) -> str:
        key = self.principal.key
        if key is None:
            return "master key"
        return key.alias or key.id


def sessions(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.console_sessions
    return store


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def master_key(gateway: Gateway) -> str | None:
    secret = gateway.config.master_key
    return secret.get_secret_value() if secret is not None else None


async def viewer(request: Request) -> Viewer:
    session_id = request.cookies.get(COOKIE, "")
    store = sessions(request)
    session = await store.get(session_id) if session_id else None
    if session is None:
        raise SignInNeeded
    gateway = gateway_of(request)
    principal = _principal(gateway, session)
    if principal is None:
        await store.end(session_id)
        raise SignInNeeded
    return Viewer(principal=principal, session=session, session_id=session_id)


def _principal(gateway: Gateway, session: Session) -> Principal | None:
    if session.key_id is None:
        master = master_key(gateway)
        if master is None or session.master_digest is None:
            return None
        return MASTER if hmac.compare_digest(digest(master), session.master_digest) else None
    found = gateway.keys.principal_of(session.key_id)
    return None if isinstance(found, Rejection) else found


async def admin(request: Request) -> Viewer:
    """The viewer, who must hold the master key."""
    found = await viewer(request)
    if not found.is_admin:
        raise Denied("This page is for the master key.")
    return found


async def key_admin(request: Request) -> Viewer:
    """The viewer, who must hold the master key or a team admin key."""
    found = await viewer(request)
    if not found.manages_keys:
        raise Denied("This page is for the master key and team admins.")
    return found


def check_csrf(found: Viewer, token: str | None) -> None:
    if not token or not hmac.compare_digest(token.encode(), found.session.csrf.encode()):
        raise Denied("The form's security token is missing or stale: reload the page and "
                     "try again.")
