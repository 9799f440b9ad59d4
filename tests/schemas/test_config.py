from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import ConfigError, load_config, parse_config

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
