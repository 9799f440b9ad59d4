"""A ``model_list`` entry: the :class:`Deployment` it becomes, the providers we serve, and
the parsing of one entry, its ``os.environ/NAME`` references resolved."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from schemas.config_values import ConfigError, problems
from schemas.price_keys import PRICE_KEYS

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


def resolve_env(value: Any, env: Mapping[str, str], where: str) -> Any:
    """Replace ``os.environ/NAME`` with the variable's value; a missing variable is fatal."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        if name not in env:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return env[name]
    return value


def kind_of(value: Any) -> str:
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


def as_mapping(value: Any, where: str) -> Mapping[Any, Any]:
    """An optional section: absent or empty is ``{}``, anything but a mapping is refused."""
    if value is None or value == [] or value == "":
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {kind_of(value)}")
    return value


def _string(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected a string, got {kind_of(value)}")


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
        raise ConfigError(f"{where}: expected a number, got {kind_of(value)}")
    try:
        return Decimal(str(value))
    except ArithmeticError as exc:
        raise ConfigError(f"{where}: {value!r} is not a number") from exc


def parse_deployment(
    index: int, entry: Any, env: Mapping[str, str], occurrence: int = 0
) -> Deployment:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"model_list[{index}]: expected a mapping, got {kind_of(entry)}")
    model_name = entry.get("model_name")
    if model_name is None or model_name == "":
        raise ConfigError(f"model_list[{index}]: model_name is missing")
    if not isinstance(model_name, str):
        raise ConfigError(f"model_list[{index}]: model_name must be a string, "
                          f"got {kind_of(model_name)}")
    where = f"model_list[{index}] ({model_name})"
    params = entry.get("litellm_params")
    if params is None:
        raise ConfigError(f"{where}: litellm_params is missing")
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: litellm_params must be a mapping, got {kind_of(params)}")
    model = params.get("model")
    if not isinstance(model, str):
        raise ConfigError(f"{where}: litellm_params.model must be 'provider/model', "
                          f"got {kind_of(model)}")
    if "/" not in model:
        raise ConfigError(f"{where}: litellm_params.model must be 'provider/model', got {model!r}")
    provider, upstream = model.split("/", 1)
    if provider not in PROVIDER_BASES:
        known = ", ".join(sorted(PROVIDER_BASES))
        raise ConfigError(f"{where}: unknown provider {provider!r} (known: {known})")
    model_info = as_mapping(entry.get("model_info"), f"{where} model_info")
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
