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
_KNOWN_GENERAL = {"master_key"}


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


class GatewayConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    deployments: tuple[Deployment, ...]
    master_key: SecretStr | None = None
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


def _deployment_id(index: int, model_name: str, params: Mapping[str, Any]) -> str:
    # Stable across processes reading the same file, so the ingress can name a deployment
    # and a worker can find it without any secret crossing the bus.
    digest = hashlib.sha256(f"{index}|{model_name}|{params.get('model')}".encode()).hexdigest()
    return f"{model_name}#{digest[:10]}"


def _decimal(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError as exc:
        raise ConfigError(f"{where}: {value!r} is not a number") from exc


def parse_deployment(
    index: int, entry: Any, env: Mapping[str, str]
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
            id=_deployment_id(index, model_name, params),
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


def parse_config(raw: Any, env: Mapping[str, str]) -> GatewayConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("config: the top level must be a mapping")
    entries = raw.get("model_list") or []
    if not isinstance(entries, list):
        raise ConfigError("config: model_list must be a list")
    deployments = tuple(parse_deployment(i, e, env) for i, e in enumerate(entries))
    general = raw.get("general_settings") or {}
    if not isinstance(general, Mapping):
        raise ConfigError("config: general_settings must be a mapping")
    master = resolve_env(general.get("master_key"), env, "general_settings.master_key")
    ignored = [f"{k}" for k in raw if k not in _KNOWN_TOP]
    ignored += [f"general_settings.{k}" for k in general if k not in _KNOWN_GENERAL]
    for section in ("litellm_settings", "router_settings"):
        body = raw.get(section) or {}
        if isinstance(body, Mapping):
            ignored += [f"{section}.{k}" for k in body]
    return GatewayConfig(
        deployments=deployments,
        master_key=SecretStr(str(master)) if master else None,
        ignored=tuple(ignored),
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


def load_config(path: str | None, env: Mapping[str, str]) -> GatewayConfig:
    """Read and parse a YAML file (or the built-in mock config when ``path`` is None)."""
    import yaml  # only the processes that read files need it

    if path is None:
        return parse_config(DEFAULT_CONFIG, env)
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config {path} is not valid YAML{where}: {exc}") from None
    return parse_config(raw, env)
