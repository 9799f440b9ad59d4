"""The ingress's audit trail: one audit event (``schemas.audit``) per admin action, built
from the request that did it and handed to the audit publisher, off the response path.

Routes call :meth:`AuditTrail.record` after the action succeeded, with the target as it
was and as it is (models or dicts; secrets are redacted by the event itself). A config
reload by signal has no request: :meth:`AuditTrail.record_signal` names the signal as the
actor and makes a request id of its own.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import Request
from pydantic import BaseModel

from core.audit_publisher import AuditPublisher
from ingress.auth.principal import Principal
from ingress.config.reload import ReloadResult
from schemas.audit import Action, AuditEvent, FieldChange, TargetKind, diff

log = logging.getLogger("aigw.ingress.audit")

# Fields that change without anyone acting on the target.
_NOISE = frozenset({"last_used_at", "object"})

Snapshot = BaseModel | dict[str, Any] | None


def _plain(value: Snapshot) -> dict[str, Any] | None:
    if isinstance(value, BaseModel):
        dumped: dict[str, Any] = value.model_dump(mode="json")
        return dumped
    return value


def client_ip(request: Request) -> str | None:
    """The peer's address as the server saw it (a proxy in front rewrites it with
    ``--forwarded-allow-ips``, as uvicorn documents)."""
    return request.client.host if request.client is not None else None


class AuditTrail:
    def __init__(self, publisher: AuditPublisher | None, config_key: str = "gateway") -> None:
        self.publisher = publisher
        self.config_key = config_key
        self.recorded = 0

    def _submit(self, event: AuditEvent) -> None:
        self.recorded += 1
        if self.publisher is None:
            log.info("audit %s", event.model_dump_json())
            return
        self.publisher.submit(event)

    def record(self, request: Request, action: Action, target_kind: TargetKind,
               target_id: str, before: Snapshot = None, after: Snapshot = None,
               principal: Principal | None = None) -> None:
        """One event for an action done in ``request`` by ``principal`` (default: the
        request's, ``request.state.principal``)."""
        if principal is None:
            principal = request.state.principal
        if principal.master:
            actor, kind, team = "master", "master", None
        elif principal.key is not None:
            actor, kind, team = principal.key.id, "key", principal.key.team_id
        else:  # an open gateway (no master key) has no admin actions to record
            return
        self._submit(AuditEvent(
            actor=actor, actor_kind=kind, actor_team_id=team, action=action,
            target_kind=target_kind, target_id=target_id,
            changes=diff(_plain(before), _plain(after), ignore=_NOISE),
            source_ip=client_ip(request), request_id=str(request.state.request_id),
        ))

    def record_sign_in(self, request: Request, principal: Principal | None) -> None:
        """A console sign-in (``principal``) or a failed one (None): the attempt's key is
        never recorded, not even in part, since it may have been a secret mistyped."""
        if principal is not None:
            self.record(request, "console.sign_in", "console", "session",
                        principal=principal)
            return
        self._submit(AuditEvent(
            actor="anonymous", actor_kind="anonymous", action="console.sign_in_failed",
            target_kind="console", target_id="session", source_ip=client_ip(request),
            request_id=str(request.state.request_id)))

    def record_signal(self, signal_name: str, action: Action, target_kind: TargetKind,
                      target_id: str, changes: dict[str, FieldChange]) -> None:
        self._submit(AuditEvent(
            actor=f"signal:{signal_name}", actor_kind="signal", action=action,
            target_kind=target_kind, target_id=target_id, changes=changes,
            request_id=f"sig_{secrets.token_hex(12)}",
        ))

    def reload_by_signal(self, signal_name: str, before: str | None,
                         result: ReloadResult) -> None:
        """A config reload a signal asked for (``ConfigReloader.on_signal_reload``)."""
        self.record_signal(signal_name, "config.reload", "config", self.config_key,
                           diff({"config_hash": before}, {"config_hash": result.hash}))
