"""The gateway configuration file: LiteLLM's ``model_list`` format plus our own sections.

Parsing is pure: :func:`parse_config` takes the decoded YAML and an environment mapping,
so a test can build any configuration without touching the process environment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from schemas.errors import ErrorKind
from schemas.infer import Endpoint

ENV_PREFIX = "os.environ/"

# Every provider prefix we serve, and the base URL its own SDK uses by default.
# ``None`` means the deployment must say where the server is (``api_base``).
PROVIDER_BASES: dict[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "mock": None,
    "hosted_vllm": None,
    "vllm": None,
    "openai_compatible": None,
    "ollama": "http://localhost:11434/v1",
    "ollama_chat": "http://localhost:11434/v1",
    "mistral": "https://api.mistral.ai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "together_ai": "https://api.together.xyz/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "xai": "https://api.x.ai/v1",
    "perplexity": "https://api.perplexity.ai",
    "lm_studio": "http://localhost:1234/v1",
}

# litellm_params keys we act on; anything else is kept in ``Deployment.extra``.
_KNOWN_PARAMS = {"model", "api_key", "api_base", "base_url", "timeout", "rpm", "tpm", "weight"}

# Top-level and general_settings keys we act on. The rest are accepted and reported.
_KNOWN_TOP = {"model_list", "general_settings", "litellm_settings", "router_settings"}
_KNOWN_GENERAL = {"master_key", "background_health_checks", "health_check_interval"}

# LiteLLM's routing strategy names; "usage-based-routing-v2" is the same strategy here.
ROUTING_STRATEGIES = (
    "simple-shuffle",
    "least-busy",
    "latency-based-routing",
    "cost-based-routing",
    "usage-based-routing",
    "usage-based-routing-v2",
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
_ROUTER_KEYS = {
    "routing_strategy", "num_retries", "retry_after", "timeout", "request_timeout",
    "fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "allowed_fails",
    "cooldown_time", "disable_cooldowns", "retry_policy",
}

# ``litellm_settings`` keys of the response cache, and LiteLLM's call type names for the
# endpoints we cache (the others, such as ``atranscription``, are reported as ignored).
_CACHE_KEYS = {"cache", "cache_params"}
_KNOWN_CACHE_PARAMS = {"type", "ttl", "namespace", "supported_call_types", "mode"}
CACHE_CALL_TYPES: dict[str, Endpoint] = {
    "completion": Endpoint.CHAT,
    "acompletion": Endpoint.CHAT,
    "embedding": Endpoint.EMBEDDINGS,
    "aembedding": Endpoint.EMBEDDINGS,
}


class ConfigError(ValueError):
    """A configuration that cannot be served. The message names the offending entry."""


class Deployment(BaseModel):
    """One ``model_list`` entry: an alias served by one upstream model at one provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    model_name: str
    provider: str
    upstream_model: str
    api_key: SecretStr | None = None
    api_base: str | None = None
    timeout: float = 600.0
    rpm: int | None = None
    tpm: int | None = None
    weight: float = 1.0
    extra: dict[str, Any] = Field(default_factory=dict)
    input_cost_per_token: Decimal | None = None
    output_cost_per_token: Decimal | None = None

    @property
    def base_url(self) -> str:
        base = self.api_base or PROVIDER_BASES.get(self.provider)
        if base is None:
            raise ConfigError(f"deployment {self.model_name!r} needs api_base")
        return base.rstrip("/")


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


class HealthCheckSettings(BaseModel):
    """``general_settings.background_health_checks`` and ``health_check_interval``: probe
    every deployment once every ``interval`` seconds, in the background (LiteLLM's keys
    and default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    interval: float = Field(default=300.0, gt=0)


class GatewayConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    deployments: tuple[Deployment, ...]
    master_key: SecretStr | None = None
    router: RouterSettings = Field(default_factory=RouterSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    health_checks: HealthCheckSettings = Field(default_factory=HealthCheckSettings)
    ignored: tuple[str, ...] = ()

    @property
    def providers(self) -> list[str]:
        return sorted({d.provider for d in self.deployments})

    @property
    def model_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for d in self.deployments:
            seen.setdefault(d.model_name, None)
        return list(seen)

    def group(self, model_name: str) -> list[Deployment]:
        return [d for d in self.deployments if d.model_name == model_name]

    def deployment(self, deployment_id: str) -> Deployment | None:
        for d in self.deployments:
            if d.id == deployment_id:
                return d
        return None


def resolve_env(value: Any, env: Mapping[str, str], where: str) -> Any:
    """Replace ``os.environ/NAME`` with the variable's value; a missing variable is fatal."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        if name not in env:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return env[name]
    return value


def _deployment_id(occurrence: int, model_name: str, params: Mapping[str, Any]) -> str:
    # Stable across processes reading the same file, so the ingress can name a deployment
    # and a worker can find it without any secret crossing the bus; and stable across edits
    # of other entries (``occurrence`` counts only entries with this alias and model), so a
    # reloaded config keeps each deployment's health and load.
    key = f"{occurrence}|{model_name}|{params.get('model')}"
    return f"{model_name}#{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _decimal(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError as exc:
        raise ConfigError(f"{where}: {value!r} is not a number") from exc


def parse_deployment(
    index: int, entry: Any, env: Mapping[str, str], occurrence: int = 0
) -> Deployment:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"model_list[{index}]: expected a mapping, got {type(entry).__name__}")
    model_name = entry.get("model_name")
    if not isinstance(model_name, str) or not model_name:
        raise ConfigError(f"model_list[{index}]: model_name is missing")
    where = f"model_list[{index}] ({model_name})"
    params = entry.get("litellm_params")
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: litellm_params is missing")
    model = params.get("model")
    if not isinstance(model, str) or "/" not in model:
        raise ConfigError(f"{where}: litellm_params.model must be 'provider/model', got {model!r}")
    provider, upstream = model.split("/", 1)
    if provider not in PROVIDER_BASES:
        known = ", ".join(sorted(PROVIDER_BASES))
        raise ConfigError(f"{where}: unknown provider {provider!r} (known: {known})")
    resolved = {k: resolve_env(v, env, f"{where} litellm_params.{k}") for k, v in params.items()}
    api_base = resolved.get("api_base") or resolved.get("base_url")
    if api_base is None and PROVIDER_BASES[provider] is None and provider != "mock":
        raise ConfigError(f"{where}: provider {provider!r} needs litellm_params.api_base")
    model_info = entry.get("model_info") or {}
    extra = {k: v for k, v in resolved.items() if k not in _KNOWN_PARAMS}
    try:
        return Deployment(
            id=_deployment_id(occurrence, model_name, params),
            model_name=model_name,
            provider=provider,
            upstream_model=upstream,
            api_key=resolved.get("api_key"),
            api_base=api_base,
            timeout=float(resolved.get("timeout") or 600.0),
            rpm=resolved.get("rpm"),
            tpm=resolved.get("tpm"),
            weight=float(resolved.get("weight") or 1.0),
            extra=extra,
            input_cost_per_token=_decimal(
                resolved.get("input_cost_per_token", model_info.get("input_cost_per_token")),
                where,
            ),
            output_cost_per_token=_decimal(
                resolved.get("output_cost_per_token", model_info.get("output_cost_per_token")),
                where,
            ),
        )
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {exc}") from exc


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
            merged.update({k: (section, v) for k, v in body.items() if k in _ROUTER_KEYS})
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
        elif key == "routing_strategy":
            if value not in ROUTING_STRATEGIES:
                raise ConfigError(f"{where}: unknown strategy {value!r} "
                                  f"(known: {', '.join(ROUTING_STRATEGIES)})")
            values[key] = value
        elif value is not None:
            values[key] = value
    try:
        return RouterSettings(**values)
    except ValueError as exc:
        raise ConfigError(f"router_settings: {exc}") from exc


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or (
            value == float("inf")):
        raise ConfigError(f"{where}: expected a number of seconds above 0, got {value!r}")
    return float(value)


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
    ignored = [f"{where}.{k}" for k in params if k not in _KNOWN_CACHE_PARAMS]
    values: dict[str, Any] = {"enabled": enabled}
    kind = params.get("type")
    if kind in ("local", "redis"):
        values["store"] = kind
    elif kind is not None:
        # s3, disk, the semantic caches: the exact-match cache in Redis or memory serves.
        ignored.append(f"{where}.type={kind}")
    if params.get("ttl") is not None:
        values["ttl"] = _seconds(params["ttl"], f"{where}.ttl")
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


def parse_health_checks(general: Mapping[str, Any]) -> HealthCheckSettings:
    enabled = general.get("background_health_checks")
    if enabled is None:
        enabled = False
    if not isinstance(enabled, bool):
        raise ConfigError("general_settings.background_health_checks: expected true or "
                          f"false, got {enabled!r}")
    interval = general.get("health_check_interval")
    if interval is None:
        return HealthCheckSettings(enabled=enabled)
    return HealthCheckSettings(
        enabled=enabled,
        interval=_seconds(interval, "general_settings.health_check_interval"))


def parse_config(raw: Any, env: Mapping[str, str]) -> GatewayConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("config: the top level must be a mapping")
    entries = raw.get("model_list") or []
    if not isinstance(entries, list):
        raise ConfigError("config: model_list must be a list")
    seen: dict[tuple[object, object], int] = {}
    parsed: list[Deployment] = []
    for i, entry in enumerate(entries):
        params = entry.get("litellm_params") if isinstance(entry, Mapping) else None
        same = (entry.get("model_name") if isinstance(entry, Mapping) else None,
                params.get("model") if isinstance(params, Mapping) else None)
        parsed.append(parse_deployment(i, entry, env, seen.get(same, 0)))
        seen[same] = seen.get(same, 0) + 1
    deployments = tuple(parsed)
    general = raw.get("general_settings") or {}
    if not isinstance(general, Mapping):
        raise ConfigError("config: general_settings must be a mapping")
    master = resolve_env(general.get("master_key"), env, "general_settings.master_key")
    ignored = [f"{k}" for k in raw if k not in _KNOWN_TOP]
    ignored += [f"general_settings.{k}" for k in general if k not in _KNOWN_GENERAL]
    for section in ("litellm_settings", "router_settings"):
        body = raw.get(section) or {}
        if isinstance(body, Mapping):
            ignored += [f"{section}.{k}" for k in body
                        if k not in _ROUTER_KEYS and not (
                            section == "litellm_settings" and k in _CACHE_KEYS)]
    litellm = raw.get("litellm_settings") or {}
    cache, cache_ignored = parse_cache_settings(litellm if isinstance(litellm, Mapping) else {})
    return GatewayConfig(
        deployments=deployments,
        master_key=SecretStr(str(master)) if master else None,
        router=parse_router_settings(raw, {d.model_name for d in deployments}),
        cache=cache,
        health_checks=parse_health_checks(general),
        ignored=tuple(ignored + cache_ignored),
    )


# What ``aigw up`` serves when given no configuration: mock models, so a first request works.
DEFAULT_CONFIG: dict[str, Any] = {
    "model_list": [
        {"model_name": "mock-gpt", "litellm_params": {"model": "mock/mock-gpt"}},
        {
            "model_name": "mock-slow",
            "litellm_params": {
                "model": "mock/mock-slow",
                "mock_ttft_ms": 300,
                "mock_tokens_per_second": 20,
            },
        },
        {"model_name": "mock-embedding", "litellm_params": {"model": "mock/mock-embedding"}},
    ]
}


def parse_config_text(text: str, env: Mapping[str, str], source: str) -> GatewayConfig:
    """Parse the YAML text of a config file; ``source`` names it in error messages."""
    import yaml  # only the processes that read files need it

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(exc).split())  # one line, for one log line
        raise ConfigError(f"config {source} is not valid YAML{where}: {problem}") from None
    return parse_config(raw, env)


def read_config_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ConfigError(f"cannot read config {path}: {reason}") from None


def load_config(path: str | None, env: Mapping[str, str]) -> GatewayConfig:
    """Read and parse a YAML file (or the built-in mock config when ``path`` is None)."""
    if path is None:
        return parse_config(DEFAULT_CONFIG, env)
    return parse_config_text(read_config_text(path), env, path)
