"""The gateway configuration file: LiteLLM's ``model_list`` format plus our own sections.

Parsing is pure: :func:`parse_config` takes the decoded YAML and an environment mapping,
so a test can build any configuration without touching the process environment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from schemas.cache_config import CACHE_KEYS, CacheSettings, parse_cache_settings
from schemas.config_values import ConfigError, problems, seconds
from schemas.price_keys import PRICE_KEYS
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
    "cohere": "https://api.cohere.com",
    "cohere_chat": "https://api.cohere.com",
    "azure": None,  # https://<resource>.openai.azure.com
}

# litellm_params keys we act on; anything else is kept in ``Deployment.extra``.
_KNOWN_PARAMS = {"model", "api_key", "api_base", "base_url", "timeout", "rpm", "tpm", "weight",
                 "tier"}

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
    # Every LiteLLM price key the entry sets (``PRICE_KEYS``), USD per token; each one
    # replaces the price table's figure for this deployment.
    prices: dict[str, Decimal] = Field(default_factory=dict)
    # LiteLLM's ``model_info.mode``: "chat", "embedding", "completion", ...; None when
    # the config does not say.
    mode: str | None = None
    # ``model_info.max_output_tokens`` (or ``max_tokens``) and ``output_vector_size``: the
    # most a call may ask for, checked by the ingress before the call is sent.
    max_output_tokens: int | None = Field(default=None, ge=1)
    output_vector_size: int | None = Field(default=None, ge=1)
    # Its tier for the ``complexity`` routing strategy: ``model_info.tier`` (where LiteLLM
    # keeps any extra key), or ``litellm_params.tier``.
    tier: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _named_prices_are_price_keys(cls, data: Any) -> Any:
        """``input_cost_per_token``/``output_cost_per_token`` given as fields also land in
        ``prices``, which is what pricing reads."""
        if isinstance(data, dict):
            named = {k: data[k] for k in ("input_cost_per_token", "output_cost_per_token")
                     if data.get(k) is not None}
            if named:
                data = {**data, "prices": {**named, **(data.get("prices") or {})}}
        return data

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


def _kind(value: Any) -> str:
    """What a value is, for an error message that must not quote it (it may be a secret)."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return "nothing" if value is None else type(value).__name__


def _mapping(value: Any, where: str) -> Mapping[Any, Any]:
    """An optional section: absent or empty is ``{}``, anything but a mapping is refused."""
    if value is None or value == [] or value == "":
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {_kind(value)}")
    return value


def _string(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected a string, got {_kind(value)}")


def _deployment_id(occurrence: int, model_name: str, model: str) -> str:
    # Stable across processes reading the same file, so the ingress can name a deployment
    # and a worker can find it without any secret crossing the bus; and stable across edits
    # of other entries (``occurrence`` counts only entries with this alias and model), so a
    # reloaded config keeps each deployment's health and load.
    key = f"{occurrence}|{model_name}|{model}"
    return f"{model_name}#{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _decimal(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ConfigError(f"{where}: expected a number, got {_kind(value)}")
    try:
        return Decimal(str(value))
    except ArithmeticError as exc:
        raise ConfigError(f"{where}: {value!r} is not a number") from exc


def parse_deployment(
    index: int, entry: Any, env: Mapping[str, str], occurrence: int = 0
) -> Deployment:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"model_list[{index}]: expected a mapping, got {_kind(entry)}")
    model_name = entry.get("model_name")
    if model_name is None or model_name == "":
        raise ConfigError(f"model_list[{index}]: model_name is missing")
    if not isinstance(model_name, str):
        raise ConfigError(f"model_list[{index}]: model_name must be a string, "
                          f"got {_kind(model_name)}")
    where = f"model_list[{index}] ({model_name})"
    params = entry.get("litellm_params")
    if params is None:
        raise ConfigError(f"{where}: litellm_params is missing")
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: litellm_params must be a mapping, got {_kind(params)}")
    model = params.get("model")
    if not isinstance(model, str):
        raise ConfigError(f"{where}: litellm_params.model must be 'provider/model', "
                          f"got {_kind(model)}")
    if "/" not in model:
        raise ConfigError(f"{where}: litellm_params.model must be 'provider/model', got {model!r}")
    provider, upstream = model.split("/", 1)
    if provider not in PROVIDER_BASES:
        known = ", ".join(sorted(PROVIDER_BASES))
        raise ConfigError(f"{where}: unknown provider {provider!r} (known: {known})")
    model_info = _mapping(entry.get("model_info"), f"{where} model_info")
    resolved = {k: resolve_env(v, env, f"{where} litellm_params.{k}") for k, v in params.items()}
    api_key = _string(resolved.get("api_key"), f"{where} litellm_params.api_key")
    api_base = (_string(resolved.get("api_base"), f"{where} litellm_params.api_base")
                or _string(resolved.get("base_url"), f"{where} litellm_params.base_url"))
    if api_base is None and PROVIDER_BASES[provider] is None and provider != "mock":
        raise ConfigError(f"{where}: provider {provider!r} needs litellm_params.api_base")
    extra = {k: v for k, v in resolved.items()
             if k not in _KNOWN_PARAMS and k not in PRICE_KEYS}
    prices = {
        key: _decimal(resolved.get(key, model_info.get(key)), f"{where} {key}")
        for key in PRICE_KEYS
    }
    given = {key: value for key, value in prices.items() if value is not None}
    for key, value in given.items():
        if not value.is_finite() or value < 0:
            raise ConfigError(f"{where} {key}: a price must be a finite number >= 0")
    try:
        return Deployment(
            id=_deployment_id(occurrence, model_name, model),
            model_name=model_name,
            provider=provider,
            upstream_model=upstream,
            api_key=api_key,
            api_base=api_base,
            timeout=float(resolved.get("timeout") or 600.0),
            rpm=resolved.get("rpm"),
            tpm=resolved.get("tpm"),
            weight=float(resolved.get("weight") or 1.0),
            extra=extra,
            input_cost_per_token=prices["input_cost_per_token"],
            output_cost_per_token=prices["output_cost_per_token"],
            prices=given,
            mode=_string(model_info.get("mode"), f"{where} model_info.mode"),
            max_output_tokens=model_info.get("max_output_tokens", model_info.get("max_tokens")),
            output_vector_size=model_info.get("output_vector_size"),
            tier=_string(model_info.get("tier", resolved.get("tier")), f"{where} tier"),
        )
    except ConfigError:
        raise
    except ValidationError as exc:
        raise ConfigError(f"{where}: {problems(exc)}") from None
    except (ValueError, TypeError) as exc:  # float() of a string or a list
        raise ConfigError(f"{where}: {exc}") from None


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
    """The config in decoded YAML. Every shape that cannot be served raises ``ConfigError``
    naming the entry, never another exception: a reload refuses it in one line."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: the top level must be a mapping, got {_kind(raw)}")
    entries = raw.get("model_list") or []
    if not isinstance(entries, list):
        raise ConfigError(f"config: model_list must be a list, got {_kind(entries)}")
    seen: dict[tuple[str, str], int] = {}
    parsed: list[Deployment] = []
    for i, entry in enumerate(entries):
        params = entry.get("litellm_params") if isinstance(entry, Mapping) else None
        name = entry.get("model_name") if isinstance(entry, Mapping) else None
        model = params.get("model") if isinstance(params, Mapping) else None
        # Only an entry with a string alias and model can be served (and counted).
        same = (name, model) if isinstance(name, str) and isinstance(model, str) else None
        occurrence = seen.get(same, 0) if same is not None else 0
        parsed.append(parse_deployment(i, entry, env, occurrence))
        if same is not None:
            seen[same] = occurrence + 1
    deployments = tuple(parsed)
    general = _mapping(raw.get("general_settings"), "general_settings")
    master = resolve_env(general.get("master_key"), env, "general_settings.master_key")
    if isinstance(master, bool) or not isinstance(master, str | int | None):
        raise ConfigError(f"general_settings.master_key: expected a string, got {_kind(master)}")
    if isinstance(master, str) and not master.strip():
        # An unfilled secret (an empty AIGW_MASTER_KEY in a deployment) must not open the gateway.
        raise ConfigError("general_settings.master_key: empty; set a key, or remove the "
                          "setting to run without one")
    sections = {s: _mapping(raw.get(s), s) for s in ("litellm_settings", "router_settings")}
    ignored = [f"{k}" for k in raw if k not in _KNOWN_TOP]
    ignored += [f"general_settings.{k}" for k in general if k not in _KNOWN_GENERAL]
    for section, body in sections.items():
        ignored += [f"{section}.{k}" for k in body
                    if k not in ROUTER_KEYS and not (
                        section == "litellm_settings" and k in CACHE_KEYS)]
    cache, cache_ignored = parse_cache_settings(sections["litellm_settings"],
                                                {d.model_name for d in deployments})
    router = parse_router_settings(raw, {d.model_name for d in deployments})
    _check_tiers(deployments, router)
    return GatewayConfig(
        deployments=deployments,
        master_key=SecretStr(str(master)) if master else None,
        router=router,
        cache=cache,
        health_checks=parse_health_checks(general),
        ignored=tuple(ignored + cache_ignored),
    )


def _check_tiers(deployments: tuple[Deployment, ...], router: RouterSettings) -> None:
    """A tier the complexity router does not know would silently count as the strongest."""
    tiers = router.complexity.tiers
    for d in deployments:
        if d.tier is not None and d.tier not in tiers and router.by_complexity(d.model_name):
            raise ConfigError(f"model_list ({d.model_name}): tier {d.tier!r} is not among "
                              f"router_settings.complexity_router.tiers ({', '.join(tiers)})")


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


def _yaml_error(exc: Exception) -> str:
    """Where and why the YAML is broken, without the snippet of the line that yaml's own
    message quotes: that line may hold a literal ``api_key``, and this message is logged
    and returned by ``POST /admin/config/reload``."""
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if mark is None:
            return f": {problem}"
        found = f" at line {mark.line + 1}: {problem} (column {mark.column + 1}"
        if exc.problem and exc.context and exc.context_mark is not None:
            found += (f", {exc.context} from line {exc.context_mark.line + 1}, "
                      f"column {exc.context_mark.column + 1}")
        return found + ")"
    if isinstance(exc, yaml.reader.ReaderError):
        return f": {exc.reason} (character {exc.position + 1})"
    if isinstance(exc, RecursionError):
        return ": nested too deeply"
    if isinstance(exc, ValueError):  # a date yaml recognises but cannot build (2024-13-01)
        return f": {exc}"
    return f": {type(exc).__name__}"


def parse_config_text(text: str, env: Mapping[str, str], source: str) -> GatewayConfig:
    """Parse the YAML text of a config file; ``source`` names it in error messages. Any
    text raises ``ConfigError`` or returns a config."""
    import yaml  # only the processes that read files need it

    try:
        raw = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise ConfigError(f"config {source} is not valid YAML{_yaml_error(exc)}") from None
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
