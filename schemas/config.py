"""The gateway configuration file: LiteLLM's ``model_list`` format plus our own sections.

Parsing is pure: :func:`parse_config` takes the decoded YAML and an environment mapping,
so a test can build any configuration without touching the process environment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from schemas.cache_config import CACHE_KEYS, CacheSettings, parse_cache_settings
from schemas.config_values import ConfigError, seconds
from schemas.router_config import ROUTER_KEYS, RouterSettings, parse_router_settings

__all__ = [
    "CacheSettings", "ConfigError", "Deployment", "GatewayConfig", "HealthCheckSettings",
    "RouterSettings", "load_config", "parse_config", "parse_config_text", "read_config_text",
]

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
        interval=seconds(interval, "general_settings.health_check_interval"))


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
                        if k not in ROUTER_KEYS and not (
                            section == "litellm_settings" and k in CACHE_KEYS)]
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
