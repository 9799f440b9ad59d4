"""A router swapping to a reloaded config: new plans see it, plans already made do not,
and what is known about unchanged deployments survives."""

from __future__ import annotations

from typing import Any

from ingress.routing.breaker import Availability
from ingress.routing.health_board import HealthBoard
from ingress.routing.router import Router
from schemas.config import GatewayConfig, parse_config
from schemas.errors import ErrorInfo, ErrorKind


def entry(alias: str, model: str, **params: Any) -> dict[str, Any]:
    return {"model_name": alias, "litellm_params": {"model": f"openai/{model}", **params}}


def config(*entries: dict[str, Any], **router_settings: Any) -> GatewayConfig:
    return parse_config({"model_list": list(entries), "router_settings": router_settings}, {})


GROUP = (entry("g", "a"), entry("g", "b"))


def test_a_new_alias_is_planned_and_a_removed_one_is_not() -> None:
    router = Router(config(*GROUP, entry("old", "o")))
    router.apply(config(*GROUP, entry("new", "n")))
    assert [d.upstream_model for d in router.plan("new")] == ["n"]
    assert router.plan("old") == []
    assert "old" not in router and router.models == ["g", "new"]


def test_a_plan_made_before_the_reload_keeps_its_deployments() -> None:
    router = Router(config(entry("m", "before")))
    plan = router.plan("m")
    router.apply(config(entry("m", "after")))
    assert [d.upstream_model for d in plan] == ["before"]
    assert [d.upstream_model for d in router.plan("m")] == ["after"]


def test_an_unchanged_group_goes_on_with_its_rotation() -> None:
    router = Router(config(*GROUP))
    first = router.plan("g")[0].upstream_model
    router.apply(config(*GROUP, entry("other", "o")))
    assert router.plan("g")[0].upstream_model != first


def test_deployment_ids_survive_an_entry_inserted_before_them() -> None:
    before = config(*GROUP)
    after = config(entry("new", "n"), *GROUP)
    assert [d.id for d in before.group("g")] == [d.id for d in after.group("g")]


def test_a_cooling_deployment_stays_cooling_across_a_reload() -> None:
    clock = [100.0]
    start = config(*GROUP, allowed_fails=0, cooldown_time=30)
    router = Router(start, health=HealthBoard(None, start.router, clock=lambda: clock[0]))
    a = start.group("g")[0]
    router.health.failed(a.id, ErrorInfo.of(ErrorKind.SERVER, "boom"))
    router.apply(config(*GROUP, entry("x", "x"), allowed_fails=0, cooldown_time=30))
    assert router.health.availability(a.id) is Availability.COOLING
    assert [d.upstream_model for d in router.plan("g")] == ["b"]


def test_new_router_settings_apply_to_the_next_failure_and_retry() -> None:
    router = Router(config(*GROUP))
    assert router.retry.next_wait(0, ErrorInfo.of(ErrorKind.SERVER, "x"), None) is None
    router.apply(config(*GROUP, num_retries=2, fallbacks=[{"g": ["g"]}]))
    assert router.settings.num_retries == 2
    assert router.fallbacks("g", ErrorKind.SERVER) == ("g",)
    assert router.retry.next_wait(0, ErrorInfo.of(ErrorKind.SERVER, "x"), None) is not None
