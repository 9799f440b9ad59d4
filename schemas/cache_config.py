"""``litellm_settings.cache`` and ``cache_params``: the response cache's defaults."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.config_values import ConfigError, seconds
from schemas.infer import Endpoint

# ``litellm_settings`` keys of the response cache, and LiteLLM's call type names for the
# endpoints we cache (the others, such as ``atranscription``, are reported as ignored).
CACHE_KEYS = {"cache", "cache_params"}
KNOWN_CACHE_PARAMS = {"type", "ttl", "namespace", "supported_call_types", "mode",
                      "similarity_threshold", "embedding_model", "max_entries_per_scope",
                      "max_temperature", "redis_semantic_cache_embedding_model",
                      "qdrant_semantic_cache_embedding_model"}
# LiteLLM's semantic cache types: ours keeps its index in NATS whichever is named
# (ingress/cache/semantic_store.py), so Redis Stack or Qdrant is never needed.
SEMANTIC_TYPES = ("semantic", "redis-semantic", "qdrant-semantic")
_SEMANTIC_KEYS = ("similarity_threshold", "max_entries_per_scope", "max_temperature",
                  "embedding_model", "redis_semantic_cache_embedding_model",
                  "qdrant_semantic_cache_embedding_model")
# LiteLLM's names for the embedding model of its semantic caches, read as ours.
_EMBEDDING_MODEL_KEYS = ("embedding_model", "redis_semantic_cache_embedding_model",
                         "qdrant_semantic_cache_embedding_model")
CACHE_CALL_TYPES: dict[str, Endpoint] = {
    "completion": Endpoint.CHAT,
    "acompletion": Endpoint.CHAT,
    "embedding": Endpoint.EMBEDDINGS,
    "aembedding": Endpoint.EMBEDDINGS,
    "rerank": Endpoint.RERANK,
    "arerank": Endpoint.RERANK,
}


class SemanticSettings(BaseModel):
    """``cache_params.type: semantic``: a chat request may be answered with the cached
    answer of an earlier one whose last user turn means the same (cosine similarity of
    their embeddings by ``embedding_model``, at least ``similarity_threshold``) and whose
    everything else is identical. ``max_entries_per_scope`` bounds one scope's entries
    (the oldest go first); a request with a ``temperature`` above ``max_temperature`` is
    left to the exact cache."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    embedding_model: str
    similarity_threshold: float = Field(default=0.9, gt=0, le=1)
    max_entries_per_scope: int = Field(default=1000, ge=1, le=1_000_000)
    max_temperature: float = Field(default=1.0, ge=0)


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
    semantic: SemanticSettings | None = None

    def default_ttl(self, endpoint: Endpoint) -> float | None:
        """How long a request to ``endpoint`` that says nothing is cached (0: not at all);
        None when the config leaves that to the process settings (``AIGW_CACHE_TTL``)."""
        if not self.enabled:
            return None
        if self.mode == "default_off" or endpoint not in self.endpoints:
            return 0.0
        return self.ttl


def _number(params: Mapping[str, Any], name: str, where: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.{name}: expected a number, got {value!r}")
    return float(value)


def parse_semantic(params: Mapping[str, Any], aliases: Collection[str] | None,
                   where: str) -> SemanticSettings:
    """The semantic cache's settings; its embedding model must be an alias of the config."""
    named = [params[k] for k in _EMBEDDING_MODEL_KEYS if params.get(k) is not None]
    if not named:
        raise ConfigError(f"{where}.embedding_model: a semantic cache needs the alias of an "
                          "embedding model in model_list")
    model = named[0]
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{where}.embedding_model: expected a model alias, got {model!r}")
    if aliases is not None and model not in aliases:
        raise ConfigError(f"{where}.embedding_model: {model!r} is not a model_name in "
                          "model_list")
    values: dict[str, Any] = {"embedding_model": model}
    threshold = _number(params, "similarity_threshold", where)
    if threshold is not None:
        if not 0 < threshold <= 1:
            raise ConfigError(f"{where}.similarity_threshold: expected a number above 0 and "
                              f"at most 1, got {threshold!r}")
        values["similarity_threshold"] = threshold
    bound = params.get("max_entries_per_scope")
    if bound is not None:
        if isinstance(bound, bool) or not isinstance(bound, int) or not 1 <= bound <= 1_000_000:
            raise ConfigError(f"{where}.max_entries_per_scope: expected a whole number from 1 "
                              f"to 1000000, got {bound!r}")
        values["max_entries_per_scope"] = bound
    temperature = _number(params, "max_temperature", where)
    if temperature is not None:
        if temperature < 0:
            raise ConfigError(f"{where}.max_temperature: expected 0 or more")
        values["max_temperature"] = temperature
    return SemanticSettings(**values)


def parse_cache_settings(
    litellm: Mapping[str, Any], aliases: Collection[str] | None = None
) -> tuple[CacheSettings, list[str]]:
    """``litellm_settings.cache`` and ``cache_params``, and what of them is not acted on.
    ``aliases``: the config's model names, which a semantic cache's embedding model must
    be one of."""
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
    elif kind in SEMANTIC_TYPES:
        # The exact-match cache keeps serving (Redis when set), the semantic one beside it.
        values["semantic"] = parse_semantic(params, aliases, where)
    elif kind is not None:
        # s3, disk: the exact-match cache in Redis or memory serves.
        ignored.append(f"{where}.type={kind}")
    if kind not in SEMANTIC_TYPES:
        ignored += [f"{where}.{k}" for k in _SEMANTIC_KEYS if k in params]
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
