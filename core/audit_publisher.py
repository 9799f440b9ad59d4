"""Publishing audit events to their JetStream stream, with the usage events' machinery
(spool, ``Nats-Msg-Id`` = event id, retries; see ``core.publisher``)."""

from __future__ import annotations

from core.audit_stream import ensure_audit_stream
from core.publisher import EventPublisher
from schemas import subjects
from schemas.audit import AuditEvent

# The spool directory's name: not "ingress-…", whose glob the usage spool adopts.
SPOOL_NAME = "audit-ingress"


class AuditPublisher(EventPublisher):
    kind = "audit"

    def submit(self, event: AuditEvent) -> None:
        self._submit(event.event_id, subjects.audit(event.target_kind),
                     event.model_dump_json().encode())

    def _route(self, data: bytes) -> tuple[str, str]:
        event = AuditEvent.model_validate_json(data)
        return event.event_id, subjects.audit(event.target_kind)

    async def _ensure_stream(self) -> None:
        await ensure_audit_stream(self._js)
