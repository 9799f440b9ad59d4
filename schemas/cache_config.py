"""``litellm_settings.cache`` and ``cache_params``: the response cache's defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.config_values import ConfigError, seconds
from schemas.infer import Endpoint

# ``litellm_settings`` keys of the response cache, and LiteLLM's call type names for the
# endpoints we cache (the others, such as ``atranscription``, are reported as ignored).
CACHE_KEYS = {"cache", "cache_params"}
KNOWN_CACHE_PARAMS = {"type", "ttl", "namespace", "supported_call_types", "mode"}
CACHE_CALL_TYPES: dict[str, Endpoint] = {
    "completion": Endpoint.CHAT,
    "acompletion": Endpoint.CHAT,
    "embedding": Endpoint.EMBEDDINGS,
    "aembedding": Endpoint.EMBEDDINGS,
}


class CacheSettings(BaseModel):
    """``litellm_settings.cache`` and ``cache_params``: the response cache's defaults.

    ``enabled`` (``cache: true``) in mode "default_on" caches every request to one of
    ``endpoints`` for ``ttl`` seconds unless the request says otherwise; in "default_off"
    only requests that ask are cached. ``store`` "local" keeps entries in the process even
    when Redis is configured; None means Redis when ``REDIS_URL`` is set. ``namespace``
    prefixes every key. The store and the namespace apply with or without ``enabled``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    mode: Literal["default_on", "default_off"] = "default_on"
    store: Literal["local", "redis"] | None = None
    ttl: float = Field(default=600.0, gt=0)
    namespace: str | None = None
    endpoints: tuple[Endpoint, ...] = (Endpoint.CHAT, Endpoint.EMBEDDINGS)

    def default_ttl(self, endpoint: Endpoint) -> float | None:
        """How long a request to ``endpoint`` that says nothing is cached (0: not at all);
        None when the config leaves that to the process settings (``AIGW_CACHE_TTL``)."""
        if not self.enabled:
            return None
        if self.mode == "default_off" or endpoint not in self.endpoints:
            return 0.0
        return self.ttl


def parse_cache_settings(litellm: Mapping[str, Any]) -> tuple[CacheSettings, list[str]]:
    """``litellm_settings.cache`` and ``cache_params``, and what of them is not acted on."""
    where = "litellm_settings.cache_params"
    enabled = litellm.get("cache", False)
    if enabled is None:
        enabled = False
    if not isinstance(enabled, bool):
        raise ConfigError(f"litellm_settings.cache: expected true or false, got {enabled!r}")
    params = litellm.get("cache_params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    ignored = [f"{where}.{k}" for k in params if k not in KNOWN_CACHE_PARAMS]
    values: dict[str, Any] = {"enabled": enabled}
    kind = params.get("type")
    if kind in ("local", "redis"):
        values["store"] = kind
    elif kind is not None:
        # s3, disk, the semantic caches: the exact-match cache in Redis or memory serves.
        ignored.append(f"{where}.type={kind}")
    if params.get("ttl") is not None:
        values["ttl"] = seconds(params["ttl"], f"{where}.ttl")
    mode = params.get("mode")
    if mode is not None:
        if mode not in ("default_on", "default_off"):
            raise ConfigError(f"{where}.mode: expected default_on or default_off, got {mode!r}")
        values["mode"] = mode
    namespace = params.get("namespace")
    if namespace is not None:
        if not isinstance(namespace, str) or not namespace:
            raise ConfigError(f"{where}.namespace: expected a non-empty string")
        values["namespace"] = namespace
    call_types = params.get("supported_call_types")
    if call_types is not None:
        if not isinstance(call_types, list) or not all(isinstance(c, str) for c in call_types):
            raise ConfigError(f"{where}.supported_call_types: expected a list of call types")
        endpoints = dict.fromkeys(CACHE_CALL_TYPES[c] for c in call_types
                                  if c in CACHE_CALL_TYPES)
        values["endpoints"] = tuple(endpoints)
        ignored += [f"{where}.supported_call_types.{c}" for c in call_types
                    if c not in CACHE_CALL_TYPES]
    return CacheSettings(**values), ignored
