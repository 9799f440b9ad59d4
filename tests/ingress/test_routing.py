from __future__ import annotations

from collections import Counter

import pytest

from ingress.routing.health_board import HealthBoard
from ingress.routing.router import Router
from schemas.config import ConfigError, parse_config
from schemas.errors import ErrorInfo, ErrorKind

GROUP = {"model_list": [
    {"model_name": "g", "litellm_params": {"model": "openai/a"}},
    {"model_name": "g", "litellm_params": {"model": "openai/b"}},
    {"model_name": "g", "litellm_params": {"model": "openai/c"}},
    {"model_name": "other", "litellm_params": {"model": "openai/o"}},
    {"model_name": "big", "litellm_params": {"model": "openai/big"}},
]}


def test_group_is_round_robin_and_every_plan_covers_the_group() -> None:
    router = Router(parse_config(GROUP, {}))
    plans = [router.plan("g") for _ in range(9)]
    assert Counter(p[0].upstream_model for p in plans) == {"a": 3, "b": 3, "c": 3}
    assert all(sorted(d.upstream_model for d in p) == ["a", "b", "c"] for p in plans)


def test_unknown_model_has_an_empty_plan() -> None:
    assert Router(parse_config({"model_list": []}, {})).plan("x") == []


def _router(clock: list[float], **router_settings: object) -> Router:
    config = parse_config({**GROUP, "router_settings": router_settings}, {})
    return Router(config, health=HealthBoard(None, config.router, clock=lambda: clock[0]))


def test_a_cooling_deployment_is_left_out_until_its_probe() -> None:
    clock = [100.0]
    router = _router(clock, allowed_fails=0, cooldown_time=5)
    a = next(d for d in router.deployments if d.upstream_model == "a")
    router.health.failed(a.id, ErrorInfo.of(ErrorKind.SERVER, "x"))
    assert all(a not in router.plan("g") for _ in range(6))
    clock[0] += 5
    assert any(a in router.plan("g") for _ in range(3))
    assert router.health.acquire(a.id)  # the probe
    assert not router.health.acquire(a.id)
    router.health.succeeded(a.id)
    assert router.health.acquire(a.id)


def test_when_every_deployment_cools_down_the_plan_tries_them_all_anyway() -> None:
    clock = [100.0]
    router = _router(clock, allowed_fails=0, cooldown_time=5)
    group = [d for d in router.deployments if d.model_name == "g"]
    for i, d in enumerate(group):
        clock[0] = 100.0 + i
        router.health.failed(d.id, ErrorInfo.of(ErrorKind.SERVER, "x"))
    plan = router.plan("g")
    assert plan.forced
    assert list(plan) == group  # soonest to recover first


def test_fallbacks_by_error_class() -> None:
    clock = [0.0]
    router = _router(clock, fallbacks=[{"g": ["other"]}],
                     context_window_fallbacks=[{"g": ["big"]}])
    assert router.fallbacks("g", ErrorKind.RATE_LIMIT) == ("other",)
    assert router.fallbacks("g", ErrorKind.CONTEXT_LENGTH) == ("big",)
    assert router.fallbacks("g", ErrorKind.CONTENT_POLICY) == ("other",)
    assert router.fallbacks("g", ErrorKind.INVALID_REQUEST) == ()
    assert router.fallbacks("other", ErrorKind.SERVER) == ()


def test_router_settings_come_from_litellm_keys_and_unknown_ones_are_reported() -> None:
    raw = {**GROUP,
           "litellm_settings": {"num_retries": 1, "request_timeout": 30,
                                "fallbacks": [{"g": ["other"]}], "drop_params": True},
           "router_settings": {"num_retries": 3, "routing_strategy": "least-busy",
                               "cooldown_time": 9, "redis_host": "x"}}
    config = parse_config(raw, {})
    assert config.router.num_retries == 3
    assert config.router.timeout == 30
    assert config.router.fallbacks == {"g": ("other",)}
    assert config.router.routing_strategy == "least-busy"
    assert config.router.cooldown_time == 9
    assert set(config.ignored) == {"litellm_settings.drop_params", "router_settings.redis_host"}


@pytest.mark.parametrize("settings", [
    {"fallbacks": [{"g": ["nope"]}]},
    {"routing_strategy": "fastest-please"},
    {"num_retries": -1},
])
def test_bad_router_settings_are_refused_with_a_clear_message(
    settings: dict[str, object]
) -> None:
    with pytest.raises(ConfigError):
        parse_config({**GROUP, "router_settings": settings}, {})
