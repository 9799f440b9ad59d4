"""The audit log's contract: one :class:`AuditEvent` per admin action, and the
:class:`AuditQuery` that reads them back. Pure (pydantic and hashlib only).

An event names who did it (``actor``: ``master``, a key id, or ``signal:SIGUSR1`` for a
reload by signal), what (``action``, e.g. ``key.rotate``), on what (``target_kind`` and
``target_id``), the fields it changed (``changes``: ``{"limits.rpm": {"before": 10,
"after": 20}}``), and from where (``source_ip``, ``request_id``).

A secret never enters an event: :func:`redact` replaces the value of every field named
like one (``secret``, ``secret_hashes``, ``master_key``, ...) with ``"[redacted]"``, and the
model runs it on whatever ``changes`` it is given, so even a careless caller cannot store
one. The event id is derived from the request id, action and target
(:func:`audit_event_id`), so publishing the same action twice stores it once.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION: Literal[1] = 1

REDACTED = "[redacted]"

# Field names whose values are secrets or stand in for one (a hash opens nothing, but it
# lets someone test guesses offline and has no business in a log).
SECRET_FIELDS = frozenset({
    "secret", "secrets", "secret_hashes", "hash", "key_hash", "master_key", "api_key",
    "password", "token", "authorization", "salt_key",
})

ACTIONS = (
    "key.create", "key.update", "key.rotate", "key.revoke",
    "team.create", "team.update", "team.delete",
    "config.reload", "batch.cancel",
    "console.sign_in", "console.sign_in_failed",
)
Action = Literal[
    "key.create", "key.update", "key.rotate", "key.revoke",
    "team.create", "team.update", "team.delete",
    "config.reload", "batch.cancel",
    "console.sign_in", "console.sign_in_failed",
]
TargetKind = Literal["key", "team", "config", "batch", "console"]
# ``anonymous``: a failed console sign-in, whose key (if it was one) is not named.
ActorKind = Literal["master", "key", "signal", "anonymous"]


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_FIELDS or lowered.endswith(("_secret", "_password", "_token"))


def redact(value: Any) -> Any:
    """``value`` with every secret-named field's value replaced by ``"[redacted]"``, at any
    depth (dicts inside lists too). The input is not modified."""
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, inner in value.items():
        path = f"{prefix}{name}"
        if isinstance(inner, dict) and inner and not _is_secret(str(name)):
            out.update(_flatten(inner, f"{path}."))
        else:
            out[path] = inner
    return out


class FieldChange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    before: Any = None
    after: Any = None


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None,
         ignore: frozenset[str] = frozenset()) -> dict[str, FieldChange]:
    """The fields that differ between two JSON objects (nested objects as dotted names).

    Compared in the clear, shown redacted: a secret that changed is listed, as
    ``"[redacted]"`` on each side where it exists, and never with its value."""
    old, new = _flatten(before or {}), _flatten(after or {})
    changes: dict[str, FieldChange] = {}
    for name in sorted(old.keys() | new.keys()):
        if name in ignore or old.get(name) == new.get(name):
            continue
        if _is_secret(name.rsplit(".", 1)[-1]):
            changes[name] = FieldChange(
                before=None if old.get(name) is None else REDACTED,
                after=None if new.get(name) is None else REDACTED)
        else:
            changes[name] = FieldChange(before=redact(old.get(name)), after=redact(new.get(name)))
    return changes


def audit_event_id(request_id: str, action: str, target_kind: str, target_id: str) -> str:
    """The same action of the same request on the same target: the same id."""
    digest = hashlib.sha256("\x00".join((request_id, action, target_kind, target_id)).encode())
    return f"aud_{digest.hexdigest()[:32]}"


def _now() -> datetime:
    return datetime.now(UTC)


class AuditEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = ""
    ts: AwareDatetime = Field(default_factory=_now)
    actor: str
    actor_kind: ActorKind
    actor_team_id: str | None = None
    action: Action
    target_kind: TargetKind
    target_id: str
    changes: dict[str, FieldChange] = Field(default_factory=dict)
    source_ip: str | None = None
    request_id: str

    @field_validator("changes", mode="before")
    @classmethod
    def _no_secrets(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        clean: dict[str, Any] = {}
        for name, change in value.items():
            if _is_secret(str(name).rsplit(".", 1)[-1]):
                sides = change if isinstance(change, dict) else {
                    "before": getattr(change, "before", None),
                    "after": getattr(change, "after", None)}
                clean[name] = {side: None if sides.get(side) is None else REDACTED
                               for side in ("before", "after")}
            elif isinstance(change, FieldChange):
                clean[name] = {"before": redact(change.before), "after": redact(change.after)}
            else:
                clean[name] = redact(change)
        return clean

    @model_validator(mode="after")
    def _derive_id(self) -> AuditEvent:
        if not self.event_id:
            object.__setattr__(self, "event_id", audit_event_id(
                self.request_id, self.action, self.target_kind, self.target_id))
        return self


MAX_LIMIT = 1000


class AuditQuery(BaseModel):
    """Filters and a page of ``GET /admin/audit``: newest first, ``limit`` from ``offset``;
    ``since`` inclusive, ``until`` exclusive."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    actor: str | None = Field(default=None, max_length=200)
    # Actions by keys of this team (a team admin reads its own team's only).
    team_id: str | None = Field(default=None, max_length=200)
    action: Action | None = None
    target_kind: TargetKind | None = None
    target_id: str | None = Field(default=None, max_length=200)
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _ordered(self) -> AuditQuery:
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError("until must be after since")
        return self
