from __future__ import annotations

from collections import Counter
from decimal import Decimal

from core.pricing import PriceTable
from ingress.routing.load import Load
from ingress.routing.strategies import (
    LeastBusy,
    LoadOf,
    LowestCost,
    LowestLatency,
    LowestUsage,
    SmoothWeighted,
    utilisation,
)
from schemas.config import Deployment


def dep(name: str, **fields: object) -> Deployment:
    return Deployment.model_validate({"id": name, "model_name": "g", "provider": "openai",
                                      "upstream_model": name, **fields})


A, B, C = dep("a"), dep("b"), dep("c")


def loads(**by_id: Load) -> LoadOf:
    return lambda deployment_id: by_id.get(deployment_id, Load())


def test_weighted_rotation_gives_each_deployment_its_weight_share_evenly() -> None:
    group = [dep("a", weight=3), dep("b", weight=1)]
    rotation = SmoothWeighted(group)
    firsts = [rotation.order()[0].id for _ in range(8)]
    assert Counter(firsts) == {"a": 6, "b": 2}
    assert firsts[:4].count("b") == 1  # spread out, not a streak of a's then b's


def test_every_order_covers_the_whole_group() -> None:
    rotation = SmoothWeighted([A, B, C])
    assert all(sorted(d.id for d in rotation.order()) == ["a", "b", "c"] for _ in range(6))


def test_least_busy_prefers_the_fewest_in_flight_and_keeps_rotation_on_ties() -> None:
    load = loads(a=Load(in_flight=5), b=Load(in_flight=1), c=Load(in_flight=1))
    assert [d.id for d in LeastBusy().order([A, B, C], load)] == ["b", "c", "a"]
    assert [d.id for d in LeastBusy().order([C, B, A], load)] == ["c", "b", "a"]


def test_lowest_latency_prefers_fast_treats_near_equal_as_equal_and_explores_unknown() -> None:
    load = loads(a=Load(latency_ms=900), b=Load(latency_ms=100), c=Load(latency_ms=105))
    assert [d.id for d in LowestLatency().order([A, B, C], load)] == ["b", "c", "a"]
    assert [d.id for d in LowestLatency().order([C, B, A], load)] == ["c", "b", "a"]
    fresh = loads(a=Load(latency_ms=900), b=Load(latency_ms=100))
    assert LowestLatency().order([A, B, C], fresh)[0].id == "b"
    assert LowestLatency().order([C, A, B], fresh)[0].id == "c"


def test_lowest_cost_uses_overrides_then_the_price_table_and_puts_unpriced_last() -> None:
    pricey = dep("gpt-4o")
    cheap = dep("gpt-4o-mini")
    custom = dep("own", input_cost_per_token=Decimal("0"), output_cost_per_token=Decimal("0"))
    unknown = dep("nobody-knows-this-model")
    order = LowestCost(PriceTable.default()).order([unknown, pricey, cheap, custom], loads())
    assert [d.id for d in order] == ["own", "gpt-4o-mini", "gpt-4o", "nobody-knows-this-model"]


def test_usage_based_skips_deployments_at_their_limit_to_the_end() -> None:
    full = dep("a", rpm=10)
    half = dep("b", tpm=1000)
    free = dep("c")
    load = loads(a=Load(requests_this_minute=10), b=Load(tokens_this_minute=500),
                 c=Load(tokens_this_minute=50))
    assert utilisation(full, Load(requests_this_minute=10)) == 1.0
    order = LowestUsage().order([full, half, free], load)
    assert [d.id for d in order] == ["c", "b", "a"]
