from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas.config import ConfigError, load_config, parse_config, parse_config_text
from schemas.infer import Endpoint

HOMESTACK = Path(__file__).resolve().parents[2].parent / "shared/examples/homestack-config.yml"
ENV = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g",
       "AI_API_MK": "sk-master"}


def test_homestack_config_loads_unchanged() -> None:
    if not HOMESTACK.exists():
        pytest.skip(f"{HOMESTACK} is not beside this checkout")
    config = load_config(str(HOMESTACK), ENV)
    assert config.model_names == ["gpt-4o-mini", "gpt-3.5", "claude-4", "claude-3-5-sonnet",
                                  "claude-3-5-haiku", "gemini-2.0-flash", "dalle3"]
    assert config.providers == ["anthropic", "gemini", "openai"]
    assert config.master_key is not None and config.master_key.get_secret_value() == "sk-master"
    claude = config.group("claude-4")[0]
    assert claude.upstream_model == "claude-sonnet-4-20250514"
    assert claude.base_url == "https://api.anthropic.com"
    assert "general_settings.disable_spend_logs" in config.ignored
    assert "litellm_settings.log_raw_request_response" in config.ignored


def test_missing_env_var_names_the_entry() -> None:
    raw = {"model_list": [{"model_name": "a", "litellm_params": {
        "model": "openai/x", "api_key": "os.environ/NOPE"}}]}
    with pytest.raises(ConfigError, match=r"model_list\[0\] \(a\).*NOPE is not set"):
        parse_config(raw, {})


def test_unknown_provider_is_refused_with_the_known_ones() -> None:
    raw = {"model_list": [{"model_name": "a", "litellm_params": {"model": "skynet/x"}}]}
    with pytest.raises(ConfigError, match="unknown provider 'skynet'"):
        parse_config(raw, {})


def test_openai_compatible_server_without_api_base_is_refused() -> None:
    raw = {"model_list": [{"model_name": "a", "litellm_params": {"model": "hosted_vllm/x"}}]}
    with pytest.raises(ConfigError, match=r"needs litellm_params\.api_base"):
        parse_config(raw, {})


def test_bad_yaml_says_where(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model_list:\n  - model_name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(str(path), {})


def test_group_deployments_get_distinct_stable_ids() -> None:
    raw = {"model_list": [
        {"model_name": "g", "litellm_params": {"model": "openai/a"}},
        {"model_name": "g", "litellm_params": {"model": "openai/b"}},
    ]}
    first, second = parse_config(raw, {}).group("g")
    again = parse_config(raw, {}).group("g")
    assert first.id != second.id and [first.id, second.id] == [d.id for d in again]


def test_price_overrides_are_exact_decimals() -> None:
    raw = {"model_list": [{"model_name": "a", "litellm_params": {
        "model": "openai/x", "input_cost_per_token": 0.0000001, "output_cost_per_token": "2e-7"}}]}
    d = parse_config(raw, {}).deployments[0]
    assert str(d.input_cost_per_token) == "1E-7" and str(d.output_cost_per_token) == "2E-7"


LITELLM_CACHE = {
    "model_list": [{"model_name": "a", "litellm_params": {"model": "openai/x"}}],
    "litellm_settings": {
        "cache": True,
        "cache_params": {
            "type": "redis",
            "ttl": 600,
            "namespace": "team-a",
            "supported_call_types": ["acompletion", "aembedding", "completion", "embedding"],
        },
    },
}


def test_litellm_cache_settings_turn_the_cache_on_for_the_listed_call_types() -> None:
    config = parse_config(LITELLM_CACHE, {})
    cache = config.cache
    assert cache.enabled and cache.store == "redis" and cache.ttl == 600.0
    assert cache.namespace == "team-a"
    assert cache.default_ttl(Endpoint.CHAT) == 600.0
    assert cache.default_ttl(Endpoint.EMBEDDINGS) == 600.0
    assert not [i for i in config.ignored if "cache" in i]


def test_cache_call_types_we_do_not_serve_and_unknown_params_are_reported_once() -> None:
    raw = {**LITELLM_CACHE, "litellm_settings": {"cache": True, "cache_params": {
        "type": "redis", "host": "localhost", "port": 6379, "password": "x",
        "supported_call_types": ["acompletion", "atranscription"]}}}
    config = parse_config(raw, {})
    assert config.cache.endpoints == (Endpoint.CHAT,)
    assert config.cache.default_ttl(Endpoint.EMBEDDINGS) == 0.0
    cache_ignored = [i for i in config.ignored if "cache" in i]
    assert cache_ignored == [
        "litellm_settings.cache_params.host", "litellm_settings.cache_params.port",
        "litellm_settings.cache_params.password",
        "litellm_settings.cache_params.supported_call_types.atranscription",
    ]


def test_a_cache_type_we_do_not_have_is_served_by_ours_and_reported() -> None:
    raw = {**LITELLM_CACHE, "litellm_settings": {"cache": True, "cache_params": {"type": "s3"}}}
    config = parse_config(raw, {})
    assert config.cache.enabled and config.cache.store is None
    assert "litellm_settings.cache_params.type=s3" in config.ignored


def test_without_cache_true_the_config_leaves_the_default_ttl_to_the_process() -> None:
    config = parse_config({"model_list": [], "litellm_settings": {
        "cache_params": {"type": "local", "namespace": "n"}}}, {})
    assert not config.cache.enabled and config.cache.default_ttl(Endpoint.CHAT) is None
    assert config.cache.store == "local" and config.cache.namespace == "n"


def test_cache_mode_default_off_caches_only_requests_that_ask() -> None:
    config = parse_config({"model_list": [], "litellm_settings": {
        "cache": True, "cache_params": {"mode": "default_off"}}}, {})
    assert config.cache.default_ttl(Endpoint.CHAT) == 0.0


@pytest.mark.parametrize(("settings", "message"), [
    ({"cache": "yes"}, r"litellm_settings\.cache: expected true or false"),
    ({"cache": True, "cache_params": {"ttl": 0}}, r"cache_params\.ttl: expected a number"),
    ({"cache": True, "cache_params": {"ttl": "10m"}}, r"cache_params\.ttl"),
    ({"cache": True, "cache_params": {"mode": "always"}}, r"cache_params\.mode"),
    ({"cache": True, "cache_params": {"supported_call_types": "acompletion"}},
     r"supported_call_types: expected a list"),
    ({"cache": True, "cache_params": ["redis"]}, r"cache_params: expected a mapping"),
])
def test_malformed_cache_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"model_list": [], "litellm_settings": settings}, {})


def test_config_text_parses_like_the_file_and_names_the_source() -> None:
    text = "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x}\n"
    assert parse_config_text(text, {}, "kv").model_names == ["a"]
    with pytest.raises(ConfigError, match=r"^config kv is not valid YAML at line 3: "):
        parse_config_text("model_list:\n  - [unclosed\n", {}, "kv")


def test_background_health_checks_are_off_by_default_every_300_s() -> None:
    config = parse_config({"model_list": []}, {})
    assert not config.health_checks.enabled
    assert config.health_checks.interval == 300.0


def test_background_health_checks_and_their_interval_are_read_not_ignored() -> None:
    config = parse_config({"model_list": [], "general_settings": {
        "background_health_checks": True, "health_check_interval": 15,
        "health_check_details": False}}, {})
    assert config.health_checks.enabled
    assert config.health_checks.interval == 15.0
    assert not [i for i in config.ignored if "background_health_checks" in i
                or "health_check_interval" in i]
    assert "general_settings.health_check_details" in config.ignored


@pytest.mark.parametrize(("general", "message"), [
    ({"background_health_checks": "yes"},
     r"general_settings\.background_health_checks: expected true or false"),
    ({"health_check_interval": 0},
     r"general_settings\.health_check_interval: expected a number of seconds"),
    ({"health_check_interval": "5m"}, r"general_settings\.health_check_interval"),
])
def test_malformed_health_check_settings_are_refused(
    general: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"model_list": [], "general_settings": general}, {})
