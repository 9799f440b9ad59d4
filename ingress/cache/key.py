"""What a request asks of the response cache, and the key its answer is stored under.

Caching is opt-in. With ``AIGW_CACHE_TTL=0`` (the default) a request is neither looked up
nor stored unless it asks, so the cache costs nothing on the hot path; an operator who sets
a TTL turns it on for every request. A config with ``litellm_settings.cache: true`` sets
that default instead, per endpoint (``cache_params.ttl``, ``supported_call_types``,
``mode``; see :func:`default_ttls`). A caller asks with the body field
``cache: {"ttl": s, "s-maxage": s, "no-cache": true, "no-store": true}`` (LiteLLM's names)
or the header ``Cache-Control: max-age=N, no-cache, no-store``:

* ``ttl`` (or ``max-age``) > 0 stores the answer for that long, and lets the request be
  answered from the cache; ``max-age`` also refuses entries older than N seconds.
* ``s-maxage`` lets the request be answered by an entry no older than that, without storing.
* ``similarity_threshold`` (0 to 1) replaces the semantic cache's threshold for this
  request (:mod:`ingress.cache.semantic`).
* ``no-cache`` never answers from the cache (a fresh answer, which may still be stored);
  ``no-store`` never stores the answer. Either wins over everything else.

Whether an answer is "deterministic enough" is the caller's call, not ours: whoever turns
caching on accepts a replay of an earlier answer, whatever the temperature.

The key is a sha256 over the endpoint, the model alias, the scope and the body without the
fields that cannot change the answer, as canonical JSON (sorted keys, integral floats as
ints, top-level nulls dropped), so ``{"temperature": 1}`` and ``{"temperature": 1.0}`` meet.
``stream`` is one of the ignored fields: a streamed and a non-streamed request share their
entry, and the relay turns one shape into the other.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ingress.auth.principal import Principal
from ingress.errors import invalid
from schemas.config import CacheSettings
from schemas.infer import Endpoint

# Fields that change who asked or how the answer travels, never what it says.
IGNORED_FIELDS = frozenset({
    "stream", "stream_options", "user", "safety_identifier", "metadata", "cache",
})
KEY_VERSION = 1

Scope = Literal["team", "global"]


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """``ttl``: how long to store the answer (0: not at all). ``lookup``: whether the
    request may be answered from the cache or by an identical request in flight.
    ``max_age``: the oldest entry it accepts (None: any unexpired one)."""

    ttl: float = 0.0
    lookup: bool = False
    max_age: float | None = None
    # The semantic cache's threshold for this request (None: the config's).
    similarity: float | None = None

    @property
    def store(self) -> bool:
        return self.ttl > 0

    @property
    def active(self) -> bool:
        return self.store or self.lookup


OFF = CachePolicy()


def default_ttls(cache: CacheSettings, env_ttl: float) -> dict[Endpoint, float]:
    """How long each endpoint's requests are cached when they say nothing: the config's
    ``cache`` when it is on, else ``AIGW_CACHE_TTL`` for every endpoint."""
    ttls: dict[Endpoint, float] = {}
    for endpoint in Endpoint:
        ttl = cache.default_ttl(endpoint)
        ttls[endpoint] = env_ttl if ttl is None else ttl
    return ttls


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value) or value < 0:
        raise invalid(f"cache.{name} must be a number of seconds, 0 or more.",
                      param=f"cache.{name}")
    return float(value)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"cache.{name} must be true or false.", param=f"cache.{name}")
    return value


def _similarity(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise invalid("cache.similarity_threshold must be a number above 0 and at most 1.",
                      param="cache.similarity_threshold")
    return float(value)


def _header_directives(header: str | None) -> dict[str, str | None]:
    directives: dict[str, str | None] = {}
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives[name.strip().lower()] = value.strip().strip('"') or None
    return directives


def policy(
    body: dict[str, Any],
    cache_control: str | None,
    default_ttl: float,
    max_ttl: float,
) -> CachePolicy:
    """The request's cache policy. Takes the ``cache`` field out of ``body`` so that no
    upstream ever sees it; a malformed one is the caller's error (400)."""
    raw = body.pop("cache", None)
    if raw is None and not cache_control:
        # The hot path when nobody asked: no parsing at all.
        return CachePolicy(ttl=min(default_ttl, max_ttl), lookup=True) if default_ttl else OFF
    if raw is not None and not isinstance(raw, Mapping):
        raise invalid("cache must be an object such as {\"ttl\": 600}.", param="cache")
    fields: Mapping[str, object] = raw or {}
    ttl, lookup, max_age = default_ttl, default_ttl > 0, None
    no_cache = no_store = False

    header = _header_directives(cache_control)
    if "max-age" in header:
        try:
            seconds = float(header["max-age"] or "")
        except ValueError:
            seconds = 0.0  # RFC 9111: an invalid max-age is treated as stale
        seconds = max(seconds, 0.0)
        ttl, max_age, lookup = seconds, seconds, seconds > 0
    no_cache = "no-cache" in header
    no_store = "no-store" in header

    if "ttl" in fields:
        ttl = _seconds(fields["ttl"], "ttl")
        lookup = lookup or ttl > 0
    if "s-maxage" in fields:
        max_age = _seconds(fields["s-maxage"], "s-maxage")
        lookup = True
    similarity = None
    if "similarity_threshold" in fields:
        similarity = _similarity(fields["similarity_threshold"])
    no_cache = _flag(fields.get("no-cache", False), "no-cache") or no_cache
    no_store = _flag(fields.get("no-store", False), "no-store") or no_store

    if no_cache:
        lookup = False
    if no_store:
        ttl = 0.0
    if max_age is not None and max_age <= 0:
        lookup = False
    return CachePolicy(ttl=min(ttl, max_ttl), lookup=lookup, max_age=max_age,
                       similarity=similarity)


def scope_of(principal: Principal, scope: Scope) -> str:
    """Whose entries a request may read: its team's, its key's when it has no team, the
    master key's own, or everybody's when the cache is configured global."""
    if scope == "global":
        return "global"
    if principal.team is not None:
        return f"team:{principal.team.id}"
    if principal.key is not None:
        return f"key:{principal.key.id}"
    return "master" if principal.master else "anonymous"


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def cache_key(endpoint: str, model_alias: str, scope: str, body: Mapping[str, Any]) -> str:
    material = {k: _canonical(v) for k, v in body.items()
                if k not in IGNORED_FIELDS and v is not None}
    material["model"] = model_alias
    text = json.dumps([KEY_VERSION, endpoint, scope, material], sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
