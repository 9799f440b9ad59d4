"""``router_settings`` (and the routing keys LiteLLM also accepts in ``litellm_settings``):
strategy, retries, deadline, fallbacks and cooldowns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.complexity_config import ComplexitySettings, parse_complexity
from schemas.config_values import ConfigError, problems
from schemas.errors import ErrorKind

# LiteLLM's routing strategy names; "usage-based-routing-v2" is the same strategy here.
ROUTING_STRATEGIES = (
    "simple-shuffle",
    "least-busy",
    "latency-based-routing",
    "cost-based-routing",
    "usage-based-routing",
    "usage-based-routing-v2",
    "complexity",  # ours: by the request's own difficulty (``complexity_router``)
)

# LiteLLM's ``retry_policy`` names and the error kinds each covers. Our own kind names
# ("rate_limit", "server", ...) are accepted too.
RETRY_POLICY_NAMES: dict[str, tuple[ErrorKind, ...]] = {
    "BadRequestErrorRetries": (ErrorKind.INVALID_REQUEST,),
    "AuthenticationErrorRetries": (ErrorKind.AUTHENTICATION, ErrorKind.PERMISSION),
    "TimeoutErrorRetries": (ErrorKind.TIMEOUT,),
    "RateLimitErrorRetries": (ErrorKind.RATE_LIMIT,),
    "ContentPolicyViolationErrorRetries": (ErrorKind.CONTENT_POLICY,),
    "InternalServerErrorRetries": (ErrorKind.SERVER, ErrorKind.OVERLOADED, ErrorKind.CONNECTION),
}

# Routing keys we act on, in ``router_settings`` or ``litellm_settings`` (LiteLLM accepts
# most of them in both places; ``router_settings`` wins when both say).
ROUTER_KEYS = {
    "routing_strategy", "num_retries", "retry_after", "timeout", "request_timeout",
    "fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "allowed_fails",
    "cooldown_time", "disable_cooldowns", "retry_policy", "complexity_router",
}

class RouterSettings(BaseModel):
    """How the ingress picks deployments, retries, falls back and cools deployments down.

    Defaults follow LiteLLM where it has one (``allowed_fails`` 3 per minute, a 5 s
    cooldown), except ``num_retries``: 0, so an error reaches the client at once unless
    the config asks for retries (failing over inside a group needs no retries).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    routing_strategy: str = "simple-shuffle"
    num_retries: int = Field(default=0, ge=0)
    # The least wait before a retry round, in seconds (LiteLLM's ``retry_after``).
    retry_after: float = Field(default=0.0, ge=0)
    # The whole request's deadline in seconds, across attempts, backoffs and fallbacks.
    timeout: float | None = Field(default=None, gt=0)
    fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    context_window_fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    content_policy_fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    allowed_fails: int = Field(default=3, ge=0)
    cooldown_time: float = Field(default=5.0, ge=0)
    # Failures older than this no longer count toward ``allowed_fails``.
    fail_window: float = Field(default=60.0, gt=0)
    disable_cooldowns: bool = False
    retry_policy: dict[ErrorKind, int] = Field(default_factory=dict)
    complexity: ComplexitySettings = Field(default_factory=ComplexitySettings)

    def by_complexity(self, model: str) -> bool:
        """Whether ``model``'s group is routed by each request's complexity."""
        return self.routing_strategy == "complexity" or model in self.complexity.model_groups


def _fallbacks(value: Any, where: str, models: set[str]) -> dict[str, tuple[str, ...]]:
    """LiteLLM's ``[{"gpt-4o": ["claude", "gemini"]}, ...]``, or one mapping."""
    if value is None:
        return {}
    items: list[Any] = value if isinstance(value, list) else [value]
    found: dict[str, tuple[str, ...]] = {}
    for item in items:
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: expected {{model: [fallback models]}}, got {item!r}")
        for model, targets in item.items():
            chain = [targets] if isinstance(targets, str) else targets
            if not isinstance(chain, list) or not all(isinstance(t, str) for t in chain):
                raise ConfigError(f"{where}.{model}: expected a list of model names")
            # A fallback to an alias nobody serves would only surface at the worst time.
            for name in (model, *chain):
                if name not in models:
                    raise ConfigError(f"{where}: {name!r} is not a model_name in model_list")
            found[str(model)] = tuple(chain)
    return found


def _retry_policy(value: Any, where: str) -> dict[ErrorKind, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping of error class to retries")
    policy: dict[ErrorKind, int] = {}
    for name, count in value.items():
        if name in RETRY_POLICY_NAMES:
            kinds = RETRY_POLICY_NAMES[name]
        elif name in ErrorKind.__members__.values():
            kinds = (ErrorKind(name),)
        else:
            known = ", ".join([*RETRY_POLICY_NAMES, *(k.value for k in ErrorKind)])
            raise ConfigError(f"{where}: unknown error class {name!r} (known: {known})")
        if not isinstance(count, int) or count < 0:
            raise ConfigError(f"{where}.{name}: expected a count of retries, got {count!r}")
        for kind in kinds:
            policy[kind] = count
    return policy


def parse_router_settings(raw: Mapping[str, Any], models: set[str]) -> RouterSettings:
    """Routing keys from ``litellm_settings`` then ``router_settings`` (which wins)."""
    merged: dict[str, Any] = {}
    for section in ("litellm_settings", "router_settings"):
        body = raw.get(section) or {}
        if isinstance(body, Mapping):
            merged.update({k: (section, v) for k, v in body.items() if k in ROUTER_KEYS})
    if "request_timeout" in merged and "timeout" not in merged:
        merged["timeout"] = merged["request_timeout"]
    merged.pop("request_timeout", None)
    values: dict[str, Any] = {}
    for key, (section, value) in merged.items():
        where = f"{section}.{key}"
        if key in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
            values[key] = _fallbacks(value, where, models)
        elif key == "retry_policy":
            values[key] = _retry_policy(value, where)
        elif key == "complexity_router":
            values["complexity"] = parse_complexity(value, where, models)
        elif key == "routing_strategy":
            if value not in ROUTING_STRATEGIES:
                raise ConfigError(f"{where}: unknown strategy {value!r} "
                                  f"(known: {', '.join(ROUTING_STRATEGIES)})")
            values[key] = value
        elif value is not None:
            values[key] = value
    try:
        return RouterSettings(**values)
    except ValidationError as exc:
        raise ConfigError(f"router_settings: {problems(exc)}") from None
