"""What a request asks of the cache, and the key it is stored under: pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.auth.principal import ANONYMOUS, MASTER, Principal
from ingress.cache.key import OFF, CachePolicy, cache_key, policy, scope_of
from ingress.errors import ApiError
from schemas.keys import Team, VirtualKey

BODY: dict[str, Any] = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}],
                        "temperature": 0.5}


def ask(body: dict[str, Any] | None = None, header: str | None = None,
        default_ttl: float = 0.0, max_ttl: float = 3600.0) -> CachePolicy:
    return policy(dict(body if body is not None else BODY), header, default_ttl, max_ttl)


def key(body: dict[str, Any], scope: str = "team:t1", endpoint: str = "chat",
        model: str = "gpt") -> str:
    return cache_key(endpoint, model, scope, body)


# --- policy ---

def test_nothing_is_cached_when_nobody_asks_and_the_default_ttl_is_zero() -> None:
    assert ask() == OFF
    assert not OFF.active


def test_a_default_ttl_caches_every_request() -> None:
    assert ask(default_ttl=60) == CachePolicy(ttl=60, lookup=True)


def test_the_default_ttl_is_capped_too() -> None:
    assert ask(default_ttl=99999, max_ttl=10).ttl == 10


def test_a_body_ttl_opts_in_to_storing_and_lookups() -> None:
    wanted = ask({**BODY, "cache": {"ttl": 120}})
    assert wanted == CachePolicy(ttl=120, lookup=True)
    assert wanted.store and wanted.active


def test_the_cache_field_is_taken_out_of_the_body() -> None:
    body = {**BODY, "cache": {"ttl": 5}}
    policy(body, None, 0, 3600)
    assert "cache" not in body
    body = {**BODY, "cache": {"no-store": True}}
    policy(body, None, 0, 3600)
    assert "cache" not in body


def test_a_body_ttl_is_capped() -> None:
    assert ask({**BODY, "cache": {"ttl": 10**9}}, max_ttl=600).ttl == 600


def test_no_cache_stores_but_never_answers_from_the_cache() -> None:
    assert ask({**BODY, "cache": {"ttl": 60, "no-cache": True}}) == CachePolicy(ttl=60)
    assert ask(default_ttl=60, header="no-cache") == CachePolicy(ttl=60)


def test_no_store_looks_up_but_never_stores() -> None:
    wanted = ask({**BODY, "cache": {"no-store": True}}, default_ttl=60)
    assert wanted == CachePolicy(ttl=0, lookup=True)
    assert ask(default_ttl=60, header="no-store").store is False


def test_no_cache_and_no_store_together_turn_the_cache_off() -> None:
    assert not ask({**BODY, "cache": {"no-cache": True, "no-store": True}},
                   default_ttl=60).active
    assert not ask(default_ttl=60, header="no-cache, no-store").active


def test_s_maxage_reads_young_entries_without_storing() -> None:
    assert ask({**BODY, "cache": {"s-maxage": 30}}) == CachePolicy(lookup=True, max_age=30)


def test_cache_control_max_age_stores_and_reads_entries_that_young() -> None:
    assert ask(header="max-age=90") == CachePolicy(ttl=90, lookup=True, max_age=90)
    assert ask(header='public, MAX-AGE="90"') == CachePolicy(ttl=90, lookup=True, max_age=90)


def test_cache_control_max_age_zero_turns_the_cache_off() -> None:
    assert not ask(default_ttl=60, header="max-age=0").active
    assert not ask(default_ttl=60, header="max-age=soon").active


def test_the_body_ttl_wins_over_the_header() -> None:
    assert ask({**BODY, "cache": {"ttl": 5}}, header="max-age=90").ttl == 5


def test_an_unrelated_cache_control_header_changes_nothing() -> None:
    assert ask(header="private") == OFF
    assert ask(header="private", default_ttl=60) == CachePolicy(ttl=60, lookup=True)


@pytest.mark.parametrize("cache", [
    "yes", 5, {"ttl": "600"}, {"ttl": -1}, {"ttl": True}, {"ttl": float("inf")},
    {"no-cache": "true"}, {"s-maxage": None},
])
def test_a_malformed_cache_field_is_the_callers_error(cache: object) -> None:
    with pytest.raises(ApiError) as info:
        ask({**BODY, "cache": cache})
    assert info.value.status == 400
    assert (info.value.param or "").startswith("cache")


# --- scope ---

def test_scope_is_the_team_then_the_key_then_the_master_key() -> None:
    team = Team(id="t1", alias="a")
    key_in_team = VirtualKey(id="k1", team_id="t1")
    lone_key = VirtualKey(id="k2")
    assert scope_of(Principal(key=key_in_team, team=team), "team") == "team:t1"
    assert scope_of(Principal(key=lone_key), "team") == "key:k2"
    assert scope_of(MASTER, "team") == "master"
    assert scope_of(ANONYMOUS, "team") == "anonymous"
    assert scope_of(Principal(key=lone_key), "global") == "global"


# --- key ---

def test_the_key_is_a_sha256_hex_digest() -> None:
    digest = key(BODY)
    assert len(digest) == 64
    assert int(digest, 16) >= 0


def test_key_order_in_the_body_does_not_matter() -> None:
    assert key(BODY) == key(dict(reversed(list(BODY.items()))))


def test_fields_that_cannot_change_the_answer_are_ignored() -> None:
    noisy = {**BODY, "stream": True, "stream_options": {"include_usage": True},
             "user": "u-1", "safety_identifier": "s", "metadata": {"trace": "x"},
             "cache": {"ttl": 5}}
    assert key(noisy) == key(BODY)


def test_integral_floats_and_ints_are_one_value() -> None:
    assert key({**BODY, "temperature": 1}) == key({**BODY, "temperature": 1.0})
    assert key({**BODY, "temperature": 1}) != key({**BODY, "temperature": 1.5})


def test_top_level_nulls_are_absent_fields() -> None:
    assert key({**BODY, "tools": None}) == key(BODY)


@pytest.mark.parametrize("change", [
    {"messages": [{"role": "user", "content": "hello"}]},
    {"temperature": 0.7},
    {"max_tokens": 10},
    {"n": 2},
    {"response_format": {"type": "json_object"}},
])
def test_anything_that_may_change_the_answer_changes_the_key(change: dict[str, Any]) -> None:
    assert key({**BODY, **change}) != key(BODY)


def test_the_scope_the_endpoint_and_the_model_alias_are_part_of_the_key() -> None:
    assert key(BODY, scope="team:t2") != key(BODY)
    assert key(BODY, endpoint="embeddings") != key(BODY)
    assert key(BODY, model="other") != key(BODY)


def test_a_request_may_set_the_semantic_similarity_threshold() -> None:
    asked = ask({**BODY, "cache": {"ttl": 60, "similarity_threshold": 0.97}})
    assert asked.similarity == 0.97 and asked.store
    assert ask({**BODY, "cache": {"ttl": 60}}).similarity is None
    for bad in (0, 1.5, "high", True):
        with pytest.raises(ApiError) as caught:
            ask({**BODY, "cache": {"similarity_threshold": bad}})
        assert caught.value.status == 400
        assert caught.value.param == "cache.similarity_threshold"
