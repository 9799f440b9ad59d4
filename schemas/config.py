"""The gateway configuration file: LiteLLM's ``model_list`` format (each entry a
:class:`~schemas.deployment.Deployment`) plus our own sections.

Parsing is pure: :func:`parse_config` takes the decoded YAML and an environment mapping,
so a test can build any configuration without touching the process environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from schemas.cache_config import CACHE_KEYS, CacheSettings, parse_cache_settings
from schemas.config_values import ConfigError, seconds
from schemas.deployment import (
    ENV_PREFIX,
    Deployment,
    as_mapping,
    kind_of,
    parse_deployment,
    resolve_env,
)
from schemas.router_config import ROUTER_KEYS, RouterSettings, parse_router_settings

__all__ = [
    "ENV_PREFIX", "CacheSettings", "ConfigError", "Deployment", "GatewayConfig",
    "HealthCheckSettings", "RouterSettings", "load_config", "parse_config",
    "parse_config_text", "read_config_text",
]

# Top-level and general_settings keys we act on. The rest are accepted and reported.
_KNOWN_TOP = {"model_list", "general_settings", "litellm_settings", "router_settings"}
_KNOWN_GENERAL = {"master_key", "background_health_checks", "health_check_interval"}


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
        raise ConfigError(f"config: the top level must be a mapping, got {kind_of(raw)}")
    entries = raw.get("model_list") or []
    if not isinstance(entries, list):
        raise ConfigError(f"config: model_list must be a list, got {kind_of(entries)}")
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
    general = as_mapping(raw.get("general_settings"), "general_settings")
    master = resolve_env(general.get("master_key"), env, "general_settings.master_key")
    if isinstance(master, bool) or not isinstance(master, str | int | None):
        raise ConfigError(f"general_settings.master_key: expected a string, got {kind_of(master)}")
    if isinstance(master, str) and not master.strip():
        # An unfilled secret (an empty AIGW_MASTER_KEY in a deployment) must not open the gateway.
        raise ConfigError("general_settings.master_key: empty; set a key, or remove the "
                          "setting to run without one")
    sections = {s: as_mapping(raw.get(s), s) for s in ("litellm_settings", "router_settings")}
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
