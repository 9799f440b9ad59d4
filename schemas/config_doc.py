"""The gateway config file as it travels through NATS KV to every replica and worker.

The document holds the file's YAML text as written, not the parsed config: each process
resolves ``os.environ/NAME`` from its own environment, so a secret given that way never
travels on the bus. One written literally in the file does, in clear, to every NATS client:
:meth:`ConfigDocument.literal_secrets` names those entries so the publisher can warn.
``hash`` names the content, so a process can tell an edit from a re-publish of what it
already serves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from schemas.config import ENV_PREFIX, ConfigError, GatewayConfig, parse_config_text


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _literal(value: Any) -> bool:
    """A secret written into the file itself rather than named as ``os.environ/NAME``."""
    if value is None or value == "":
        return False
    return not (isinstance(value, str) and value.startswith(ENV_PREFIX))


class ConfigDocument(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    text: str
    hash: str
    # Where the text came from (``host:path``) and the file's modification time (epoch
    # seconds): "the newest file wins" when a replica starts with a file that differs.
    source: str
    mtime: float
    published_at: AwareDatetime = Field(default_factory=_now)

    @classmethod
    def of(cls, text: str, source: str, mtime: float) -> ConfigDocument:
        return cls(text=text, hash=content_hash(text), source=source, mtime=mtime)

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    def parse(self, env: Mapping[str, str]) -> GatewayConfig:
        """The config this process serves from the document; raises ``ConfigError`` and
        nothing else, so one revision this parser trips on cannot stop a follower."""
        try:
            return parse_config_text(self.text, env, self.source)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"config {self.source} cannot be parsed "
                              f"({type(exc).__name__}: {exc})") from exc

    def literal_secrets(self) -> list[str]:
        """The entries whose ``api_key`` or ``master_key`` the text holds literally (not as
        ``os.environ/NAME``): the document carries them to every NATS client. Names only,
        never the values."""
        import yaml

        try:
            raw = yaml.safe_load(self.text)
        except (yaml.YAMLError, ValueError, RecursionError):
            return []
        if not isinstance(raw, Mapping):
            return []
        found: list[str] = []
        entries = raw.get("model_list")
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            params = entry.get("litellm_params") if isinstance(entry, Mapping) else None
            if isinstance(params, Mapping) and _literal(params.get("api_key")):
                found.append(f"model_list[{i}] ({entry.get('model_name')}) litellm_params.api_key")
        general = raw.get("general_settings")
        if isinstance(general, Mapping) and _literal(general.get("master_key")):
            found.append("general_settings.master_key")
        return found

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, data: bytes) -> ConfigDocument | None:
        """The document in a KV value, or None for one this version cannot read."""
        try:
            doc = cls.model_validate_json(data)
        except ValidationError:
            return None
        return doc if doc.hash == content_hash(doc.text) else None


class ReloadReport(BaseModel):
    """``POST /admin/config/reload``: ``applied`` when the file's config is served now,
    ``changed`` when this call changed what is served."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    applied: bool
    hash: str | None = None
    error: str | None = None
    changed: bool = False
