"""Virtual keys and teams: what the KV buckets hold and what the admin API speaks.

A :class:`VirtualKey` and a :class:`Team` are stored as JSON, one KV entry per id, in the
buckets :data:`KEYS_BUCKET` and :data:`TEAMS_BUCKET`. The clear secret of a key never leaves
the response that created or rotated it; the bucket keeps only its SHA-256.

The admin bodies (``*Create``, ``*Update``, ``RotateRequest``) refuse unknown fields, so a
typo in a limit name is a 400 and not a silently ignored limit. In an ``*Update`` body a field
that is absent stays as it is and a field sent as ``null`` is cleared; ``limits`` is merged
field by field the same way.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal[1] = 1

KEYS_BUCKET = "aigw_keys"
TEAMS_BUCKET = "aigw_teams"

SECRET_PREFIX = "sk-aigw-"
# 30 random bytes are 40 url-safe characters: 240 bits, far beyond guessing.
_SECRET_BYTES = 30


def _now() -> datetime:
    return datetime.now(UTC)


def new_key_id() -> str:
    return f"key_{secrets.token_hex(12)}"


def new_team_id() -> str:
    return f"team_{secrets.token_hex(12)}"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a secret.

    A fast hash is the right tool here: the secrets are 240 random bits, so there is no
    dictionary to try and a slow KDF (bcrypt, argon2) would buy nothing but latency on every
    request. Slow hashes exist for low-entropy, human-chosen passwords.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_hint(secret: str) -> str:
    """What lists show so a person can tell their keys apart: ``sk-aigw-...wxyz``."""
    return f"{SECRET_PREFIX}...{secret[-4:]}"


_STRICT = ConfigDict(frozen=True, extra="forbid")

# ``team_admin``: a key of a team that also manages that team's other keys (granted by the
# master key; see ingress/auth/admin_scope.py). ``user``: a key that only calls models.
KeyRole = Literal["user", "team_admin"]
_ModelList = list[str]
_Metadata = dict[str, str]


class Limits(BaseModel):
    """``None`` means no limit at this level. A key's limits nest inside its team's."""

    model_config = _STRICT

    rpm: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)
    max_parallel: int | None = Field(default=None, ge=0)
    daily_budget_usd: Decimal | None = Field(default=None, ge=0)
    monthly_budget_usd: Decimal | None = Field(default=None, ge=0)


class Team(BaseModel):
    model_config = _STRICT

    schema_version: Literal[1] = SCHEMA_VERSION
    object: Literal["team"] = "team"
    id: str = Field(default_factory=new_team_id)
    alias: str | None = None
    limits: Limits = Field(default_factory=Limits)
    # Empty means every model the gateway serves.
    allowed_models: _ModelList = Field(default_factory=list)
    metadata: _Metadata = Field(default_factory=dict)
    created_at: AwareDatetime = Field(default_factory=_now)


class SecretHash(BaseModel):
    """One secret that opens a key. After a rotation the old one carries an ``expires_at``
    so clients can move to the new secret during a grace period."""

    model_config = _STRICT

    hash: str
    hint: str
    expires_at: AwareDatetime | None = None

    def valid_at(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


class VirtualKey(BaseModel):
    """A key as stored in KV. Never returned as is: :meth:`view` drops the hashes."""

    model_config = _STRICT

    schema_version: Literal[1] = SCHEMA_VERSION
    id: str = Field(default_factory=new_key_id)
    alias: str | None = None
    team_id: str | None = None
    # Empty means every model the team (or the gateway) allows.
    allowed_models: _ModelList = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    expires_at: AwareDatetime | None = None
    metadata: _Metadata = Field(default_factory=dict)
    created_at: AwareDatetime = Field(default_factory=_now)
    last_used_at: AwareDatetime | None = None
    revoked: bool = False
    role: KeyRole = "user"
    secret_hashes: list[SecretHash] = Field(default_factory=list)

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def view(self) -> KeyView:
        current = next((s for s in self.secret_hashes if s.expires_at is None), None)
        return KeyView(
            id=self.id,
            alias=self.alias,
            team_id=self.team_id,
            allowed_models=self.allowed_models,
            limits=self.limits,
            expires_at=self.expires_at,
            metadata=self.metadata,
            created_at=self.created_at,
            last_used_at=self.last_used_at,
            revoked=self.revoked,
            hint=current.hint if current else None,
            role=self.role,
        )


# ---- admin API bodies ------------------------------------------------------------------


class KeyView(BaseModel):
    """A key as the admin API shows it: everything but the secret hashes."""

    model_config = _STRICT

    object: Literal["key"] = "key"
    id: str
    alias: str | None
    team_id: str | None
    allowed_models: _ModelList
    limits: Limits
    expires_at: AwareDatetime | None
    metadata: _Metadata
    created_at: AwareDatetime
    last_used_at: AwareDatetime | None
    revoked: bool
    hint: str | None
    role: KeyRole = "user"


class KeyWithSecret(KeyView):
    """The answer to a create or a rotate: the only time the clear secret is shown."""

    secret: str


class KeyCreate(BaseModel):
    model_config = _STRICT

    alias: str | None = None
    team_id: str | None = None
    allowed_models: _ModelList = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    expires_at: AwareDatetime | None = None
    metadata: _Metadata = Field(default_factory=dict)
    role: KeyRole = "user"


class KeyUpdate(BaseModel):
    model_config = _STRICT

    alias: str | None = None
    team_id: str | None = None
    allowed_models: _ModelList | None = None
    limits: Limits | None = None
    expires_at: AwareDatetime | None = None
    metadata: _Metadata | None = None
    role: KeyRole | None = None


class RotateRequest(BaseModel):
    model_config = _STRICT

    # How long the old secret keeps working; 0 retires it at once.
    grace_seconds: int = Field(default=0, ge=0, le=90 * 24 * 3600)


class TeamCreate(BaseModel):
    model_config = _STRICT

    alias: str | None = None
    limits: Limits = Field(default_factory=Limits)
    allowed_models: _ModelList = Field(default_factory=list)
    metadata: _Metadata = Field(default_factory=dict)


class TeamUpdate(BaseModel):
    model_config = _STRICT

    alias: str | None = None
    limits: Limits | None = None
    allowed_models: _ModelList | None = None
    metadata: _Metadata | None = None


class TeamDeleted(BaseModel):
    model_config = _STRICT

    id: str
    object: Literal["team"] = "team"
    deleted: bool = True


class KeyList(BaseModel):
    model_config = _STRICT

    object: Literal["list"] = "list"
    data: list[KeyView]


class TeamList(BaseModel):
    model_config = _STRICT

    object: Literal["list"] = "list"
    data: list[Team]


def merge_limits(current: Limits, patch: Limits) -> Limits:
    """``current`` with the fields ``patch`` was given (explicit ``null`` clears one)."""
    return current.model_copy(update={f: getattr(patch, f) for f in patch.model_fields_set})
