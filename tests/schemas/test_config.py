from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

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


def test_rerank_is_a_cache_call_type_and_not_cached_unless_listed() -> None:
    raw = {**LITELLM_CACHE, "litellm_settings": {"cache": True, "cache_params": {
        "supported_call_types": ["arerank"]}}}
    assert parse_config(raw, {}).cache.default_ttl(Endpoint.RERANK) > 0
    assert parse_config(LITELLM_CACHE, {}).cache.default_ttl(Endpoint.RERANK) == 0.0


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


# ---- malformed shapes: a ConfigError naming the entry, never another exception ------------


def one_entry(**fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"model_name": "a", "litellm_params": {"model": "openai/x"}}
    entry.update(fields)
    return {"model_list": [entry]}


@pytest.mark.parametrize(("raw", "message"), [
    (one_entry(model_name=["a", "b"]),
     r"^model_list\[0\]: model_name must be a string, got a list$"),
    (one_entry(model_name={"a": 1}), r"^model_list\[0\]: model_name must be a string"),
    (one_entry(litellm_params={"model": ["openai/x"]}),
     r"^model_list\[0\] \(a\): litellm_params\.model must be 'provider/model', got a list$"),
    (one_entry(litellm_params={"model": {"openai": "x"}}),
     r"^model_list\[0\] \(a\): litellm_params\.model must be .*got a mapping$"),
    (one_entry(litellm_params=["openai/x"]), r"^model_list\[0\] \(a\): litellm_params must be"),
    (one_entry(model_info=3),
     r"^model_list\[0\] \(a\) model_info: expected a mapping, got a number$"),
    (one_entry(model_info=["x"]), r"^model_list\[0\] \(a\) model_info: expected a mapping"),
    (one_entry(model_info={"input_cost_per_token": [1]}),
     r"^model_list\[0\] \(a\) input_cost_per_token: expected a number, got a list$"),
    (one_entry(litellm_params={"model": "openai/x", "api_base": ["http://h"]}),
     r"^model_list\[0\] \(a\) litellm_params\.api_base: expected a string"),
    (one_entry(litellm_params={"model": "openai/x", "timeout": [1]}), r"^model_list\[0\] \(a\): "),
    ({"model_list": [], "general_settings": {"master_key": ["sk"]}},
     r"^general_settings\.master_key: expected a string, got a list$"),
    ({"model_list": [], "general_settings": "sk"}, r"^general_settings: expected a mapping"),
    ({"model_list": [], "litellm_settings": ["cache"]}, r"^litellm_settings: expected a mapping"),
    ({"model_list": [], "router_settings": 3}, r"^router_settings: expected a mapping"),
    ({"model_list": {"a": 1}}, r"^config: model_list must be a list, got a mapping$"),
])
def test_a_malformed_shape_is_refused_naming_the_entry(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, {})


def test_a_literal_api_key_of_the_wrong_type_is_refused_without_quoting_it() -> None:
    raw = one_entry(litellm_params={"model": "openai/x", "api_key": 123456789, "rpm": "many"})
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, {})
    assert "api_key: expected a string, got a number" in str(refused.value)
    assert "123456789" not in str(refused.value)
    with pytest.raises(ConfigError, match=r"^model_list\[0\] \(a\): rpm: .*integer") as bad_rpm:
        parse_config(one_entry(litellm_params={"model": "openai/x", "rpm": "many"}), {})
    assert "\n" not in str(bad_rpm.value)


# Every position of a config that uses each section we act on, and values of every YAML
# shape to put there.
FULL: dict[str, Any] = {
    "model_list": [
        {"model_name": "a", "litellm_params": {
            "model": "openai/x", "api_key": "os.environ/K", "api_base": "http://h/v1",
            "timeout": 5, "rpm": 1, "tpm": 2, "weight": 1, "input_cost_per_token": 1e-7},
         "model_info": {"output_cost_per_token": 2e-7}},
        {"model_name": "b", "litellm_params": {"model": "anthropic/y"}},
    ],
    "general_settings": {"master_key": "sk", "background_health_checks": True,
                         "health_check_interval": 5},
    "litellm_settings": {"cache": True, "num_retries": 1, "fallbacks": [{"a": ["b"]}],
                         "cache_params": {"type": "redis", "ttl": 5, "namespace": "n",
                                          "mode": "default_on",
                                          "supported_call_types": ["acompletion"]}},
    "router_settings": {"routing_strategy": "simple-shuffle", "retry_policy": {
        "RateLimitErrorRetries": 2}, "context_window_fallbacks": {"a": "b"}},
}
SHAPES: list[Any] = [None, 0, 3, 1.5, True, "x", "", "os.environ/NOPE", [], [1], [[1]], {},
                     {"k": 1}, {1: [2]}]


def positions(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
        node, list) else []
    for key, child in children:
        found += positions(child, (*path, key))
    return found


def replaced(path: tuple[Any, ...], value: Any) -> Any:
    root = yaml.safe_load(yaml.safe_dump(FULL))
    if not path:
        return value
    node = root
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return root


@pytest.mark.parametrize("shape", SHAPES, ids=repr)
def test_any_shape_anywhere_is_served_or_refused_with_a_config_error(shape: Any) -> None:
    assert parse_config(FULL, {"K": "k"}).model_names == ["a", "b"]
    for path in positions(FULL):
        try:
            parse_config(replaced(path, shape), {"K": "k"})
        except ConfigError:
            pass
        except Exception as exc:
            pytest.fail(f"{path} = {shape!r}: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("broken", [
    "model_list:\n  - model_name: a\n    model_info: 3\n    litellm_params: {model: openai/x}\n",
    "model_list:\n  - model_name: [a, b]\n    litellm_params: {model: openai/x}\n",
    "model_list:\n  - model_name: a\n    litellm_params: {model: {openai: x}}\n",
])
def test_a_malformed_file_stops_start_up_with_one_line(tmp_path: Path, broken: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(broken)
    with pytest.raises(ConfigError, match=r"^model_list\[0\]") as refused:
        load_config(str(path), {})
    assert "\n" not in str(refused.value)


SECRET_LINE = ('model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/x\n'
               '      api_key: "sk-live-SECRET123\n')


def test_a_yaml_error_says_where_and_why_but_never_quotes_the_line() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config_text(SECRET_LINE, {}, "c.yaml")
    message = str(refused.value)
    assert "SECRET123" not in message and "sk-live" not in message
    assert message == ("config c.yaml is not valid YAML at line 6: found unexpected end of "
                       "stream (column 1, while scanning a quoted scalar from line 5, "
                       "column 16)")


@pytest.mark.parametrize(("text", "message"), [
    ("when: 2024-13-01\n", r"^config c\.yaml is not valid YAML: month must be in 1\.\.12$"),
    ("[" * 5000, r"^config c\.yaml is not valid YAML: nested too deeply$"),
    ("a: \x01\n", r"^config c\.yaml is not valid YAML: special characters are not allowed"),
])
def test_yaml_that_cannot_be_built_is_a_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config_text(text, {}, "c.yaml")


def test_a_router_setting_of_the_wrong_type_is_one_line_naming_it() -> None:
    raw = {"model_list": [{"model_name": "a", "litellm_params": {"model": "openai/x"}}],
           "router_settings": {"num_retries": [1]}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    assert str(caught.value) == "router_settings: num_retries: Input should be a valid integer"


@pytest.mark.parametrize("value", ["os.environ/AIGW_MASTER_KEY", "", "  "])
def test_a_master_key_that_is_empty_stops_start_up_instead_of_opening_the_gateway(
        value: str) -> None:
    raw = {"model_list": [], "general_settings": {"master_key": value}}
    with pytest.raises(ConfigError, match="master_key: empty"):
        parse_config(raw, {"AIGW_MASTER_KEY": ""})
