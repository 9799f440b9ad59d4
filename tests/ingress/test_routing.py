from __future__ import annotations

from collections import Counter

from ingress.routing import Router
from schemas.config import parse_config


def test_group_is_round_robin_and_every_plan_covers_the_group() -> None:
    raw = {"model_list": [
        {"model_name": "g", "litellm_params": {"model": "openai/a"}},
        {"model_name": "g", "litellm_params": {"model": "openai/b"}},
        {"model_name": "g", "litellm_params": {"model": "openai/c"}},
    ]}
    router = Router(parse_config(raw, {}))
    plans = [router.plan("g") for _ in range(9)]
    assert Counter(p[0].upstream_model for p in plans) == {"a": 3, "b": 3, "c": 3}
    assert all(sorted(d.upstream_model for d in p) == ["a", "b", "c"] for p in plans)


def test_unknown_model_has_an_empty_plan() -> None:
    assert Router(parse_config({"model_list": []}, {})).plan("x") == []
