"""The complexity router: features, score, tier and the order of a group. Pure."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from ingress.routing import classifier, complexity
from ingress.routing.router import Router
from schemas.complexity_config import ComplexitySettings
from schemas.config import ConfigError, Deployment, parse_config

SETTINGS = ComplexitySettings()
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {}}} for n in "abc"]
CODE = "Why does this fail?\n```python\ndef f(x):\n    return x[0]\n```"


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


def dep(name: str, tier: str | None, price: str | None = None) -> Deployment:
    fields: dict[str, Any] = {"id": name, "model_name": "auto", "provider": "openai",
                              "upstream_model": name, "tier": tier}
    if price is not None:
        fields |= {"input_cost_per_token": price, "output_cost_per_token": price}
    return Deployment.model_validate(fields)


def price_of(d: Deployment) -> Decimal | None:
    return d.input_cost_per_token


def ids(ds: list[Deployment]) -> list[str]:
    return [d.id for d in ds]


# ---- features ----------------------------------------------------------------------


def test_a_plain_question_has_no_feature_of_a_hard_task() -> None:
    f = complexity.features_of(chat("What is the capital of France?"), SETTINGS.keywords)
    assert (f.tools, f.code_fences, f.code_lines, f.images, f.keywords) == (0, 0, 0, 0, ())
    assert f.turns == 1
    assert f.reasoning_effort is None
    assert 0 < f.prompt_tokens < 20


def test_code_is_found_in_fences_and_in_code_like_lines() -> None:
    fenced = complexity.features_of(chat(CODE), SETTINGS.keywords)
    assert fenced.code_fences == 1
    bare = "x = load()\nfor (i = 0; i < n; i++) {\n  total += x[i];\n}\nreturn total;"
    lines = complexity.features_of(chat(bare), SETTINGS.keywords)
    assert lines.code_fences == 0
    assert lines.code_lines >= 4
    prose = complexity.features_of(chat("I like tea. It is warm; it is nice."),
                                   SETTINGS.keywords)
    assert prose.code_lines == 0


def test_keywords_match_whole_words_in_the_users_turns_only() -> None:
    body = {"messages": [
        {"role": "system", "content": "Always prove your claims."},
        {"role": "user", "content": "Derive it step by step; improve nothing, disprove nothing"},
    ]}
    f = complexity.features_of(body, SETTINGS.keywords)
    assert set(f.keywords) == {"derive", "step by step"}  # not "prove" in "disprove"


def test_images_tools_depth_and_reasoning_effort_are_counted() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    body = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "and this one?"}, image]},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": [image, image]},
    ], "tools": TOOLS, "reasoning_effort": "HIGH"}
    f = complexity.features_of(body, SETTINGS.keywords)
    assert (f.images, f.tools, f.turns, f.reasoning_effort) == (3, 3, 3, "high")
    responses_style = complexity.features_of(chat("hi", reasoning={"effort": "medium"}), ())
    assert responses_style.reasoning_effort == "medium"


def test_a_huge_prompt_is_scanned_only_up_to_a_bound() -> None:
    body = chat("word " * 200_000 + "\n```\nx\n```")
    f = complexity.features_of(body, SETTINGS.keywords)
    assert f.code_fences == 0  # past the scanned characters
    assert f.prompt_tokens > 200_000


# ---- score and tier -------------------------------------------------------------------


def test_an_easy_prompt_scores_low_and_needs_the_first_tier() -> None:
    decision = complexity.decide(chat("Translate 'good morning' into Spanish."), SETTINGS)
    assert decision.score < 0.15
    assert decision.tier == "small"
    assert decision.reason.startswith("score 0.0")


def test_code_tools_and_high_reasoning_effort_need_the_strongest_tier() -> None:
    decision = complexity.decide(chat(CODE, tools=TOOLS, reasoning_effort="high"), SETTINGS)
    assert decision.tier == "large"
    assert decision.score == pytest.approx(0.95, abs=0.01)
    capped = complexity.decide(chat("Debug it step by step. " + CODE, reasoning_effort="high"),
                               SETTINGS)
    assert capped.score == 1.0
    assert next(iter(decision.contributions)) == "reasoning"  # largest first
    assert "reasoning_effort high +0.55" in decision.reason
    assert "1 code block +0.25" in decision.reason
    assert "3 tools +0.15" in decision.reason


def test_one_hard_task_keyword_needs_the_middle_tier_and_two_the_strongest() -> None:
    assert complexity.decide(chat("Prove it."), SETTINGS).tier == "medium"
    decision = complexity.decide(chat("Prove it step by step."), SETTINGS)
    assert decision.tier == "large"
    assert "keywords prove/step by step +0.40" in decision.reason


def test_the_score_is_the_sum_of_weight_times_strength() -> None:
    f = complexity.Features(prompt_tokens=2000, tools=1, turns=7, keywords=("prove",))
    value, parts = complexity.score(f, SETTINGS)
    assert parts == {"keywords": 0.2, "length": 0.15, "tools": 0.1, "depth": 0.05}
    assert value == pytest.approx(0.5)


def test_weights_and_thresholds_come_from_the_settings() -> None:
    only_tools = ComplexitySettings(
        tiers=("cheap", "strong"), thresholds={"strong": 0.1},
        weights={**dict.fromkeys(SETTINGS.weights, 0.0), "tools": 1.0})
    assert complexity.decide(chat("hi", tools=TOOLS[:1]), only_tools).tier == "strong"
    assert complexity.decide(chat("prove it step by step"), only_tools).tier == "cheap"


# ---- tier choice ------------------------------------------------------------------------


GROUP = [dep("large-a", "large", "0.00001"), dep("small-dear", "small", "0.000002"),
         dep("medium", "medium", "0.000003"), dep("small-cheap", "small", "0.000001")]


def test_an_easy_request_goes_to_the_cheapest_small_then_up_the_tiers() -> None:
    easy = complexity.decide(chat("hello"), SETTINGS)
    assert ids(complexity.order(GROUP, easy, SETTINGS, price_of)) == [
        "small-cheap", "small-dear", "medium", "large-a"]


def test_a_hard_request_never_goes_to_a_weaker_tier() -> None:
    hard = complexity.decide(chat(CODE, tools=TOOLS, reasoning_effort="high"), SETTINGS)
    assert ids(complexity.order(GROUP, hard, SETTINGS, price_of)) == ["large-a"]


def test_without_a_covering_tier_the_strongest_there_is_serves() -> None:
    hard = complexity.decide(chat(CODE, tools=TOOLS, reasoning_effort="high"), SETTINGS)
    group = [dep("s", "small", "0.000001"), dep("m", "medium", "0.000003")]
    order = complexity.order(group, hard, SETTINGS, price_of)
    assert ids(order) == ["m"]
    route = complexity.note(hard, order[0], SETTINGS)
    assert route.tier == "medium"
    assert route.reason.endswith("; medium: the strongest tier this group has")


def test_an_undeclared_tier_counts_as_the_strongest_and_unpriced_goes_last() -> None:
    easy = complexity.decide(chat("hello"), SETTINGS)
    group = [dep("untiered", None, "0.000001"), dep("large-unpriced", "large"),
             dep("large-priced", "large", "0.00001")]
    assert ids(complexity.order(group, easy, SETTINGS, price_of)) == [
        "untiered", "large-priced", "large-unpriced"]


def test_the_note_of_a_fallback_says_it_went_up() -> None:
    easy = complexity.decide(chat("hello"), SETTINGS)
    route = complexity.note(easy, GROUP[0], SETTINGS)
    assert route.tier == "large"
    assert "; up to large: no small deployment available" in route.reason
    headers = route.headers()
    assert headers["x-aigw-route-tier"] == "large"
    assert headers["x-aigw-route-score"] == str(easy.score)
    assert complexity.note(easy, GROUP[1], SETTINGS).reason == easy.reason


def test_a_reason_with_a_non_ascii_keyword_still_makes_a_header() -> None:
    settings = ComplexitySettings(keywords=("beweise",  "démontrer"))
    decision = complexity.decide(chat("Démontrer que"), settings)
    value = complexity.note(decision, dep("x", "medium"), settings).headers()
    value["x-aigw-route-reason"].encode("latin-1")


# ---- the router and the config ------------------------------------------------------------


def config(router_settings: dict[str, Any], tiers: list[str | None]) -> dict[str, Any]:
    return {
        "model_list": [
            {"model_name": "auto", "litellm_params": {"model": f"openai/{m}", "api_key": "k"},
             **({"model_info": {"tier": t}} if t else {})}
            for m, t in zip(["gpt-4o-mini", "gpt-4o", "o3"], tiers, strict=True)
        ] + [{"model_name": "plain", "litellm_params": {"model": "openai/gpt-4o-mini",
                                                        "api_key": "k"}}],
        "router_settings": router_settings,
    }


def test_the_router_plans_a_complexity_group_per_request_priced_by_the_table() -> None:
    router = Router(parse_config(config({"routing_strategy": "complexity"},
                                        ["small", "medium", "large"]), {}))
    easy = router.plan("auto", chat("hello"))
    assert [d.upstream_model for d in easy] == ["gpt-4o-mini", "gpt-4o", "o3"]
    assert easy.route is not None
    assert easy.route.tier == "small"
    hard = router.plan("auto", chat(CODE, tools=TOOLS, reasoning_effort="high"))
    assert [d.upstream_model for d in hard] == ["o3"]
    # Without a request (a batch) or for a group of another strategy: no decision.
    assert router.plan("auto").route is None
    assert len(router.plan("auto")) == 3
    # A group that declares no tier has none to choose from.
    assert router.plan("plain", chat("hello")).route is None


def test_model_groups_opt_one_group_in_under_another_strategy() -> None:
    settings = {"routing_strategy": "least-busy", "complexity_router": {"model_groups": ["auto"]}}
    router = Router(parse_config(config(settings, ["small", "medium", "large"]), {}))
    assert router.plan("auto", chat("hello")).route is not None
    assert router.plan("plain", chat("hello")).route is None


def test_litellm_params_tier_is_read_and_kept_out_of_the_upstream_extras() -> None:
    raw = {"model_list": [{"model_name": "a", "litellm_params": {
        "model": "openai/gpt-4o", "api_key": "k", "tier": "large"}}]}
    d = parse_config(raw, {}).deployments[0]
    assert d.tier == "large"
    assert "tier" not in d.extra


def test_the_config_is_refused_with_a_line_naming_what_is_wrong() -> None:
    strategy = {"routing_strategy": "complexity"}
    with pytest.raises(ConfigError, match="tier 'huge' is not among"):
        parse_config(config(strategy, ["small", "huge", None]), {})
    cases = [
        ({"tiers": ["a", "a"]}, "distinct"),
        ({"tiers": ["a", "b"], "thresholds": {}}, "no threshold for b"),
        ({"thresholds": {"medium": 0.7, "large": 0.5}}, "rising"),
        ({"thresholds": {"medium": 0.1, "large": 1.5}}, "rising"),
        ({"weights": {"vibes": 1}}, "unknown feature vibes"),
        ({"classifier": "gpt-4o-mini"}, "unknown key classifier "),
        ({"classifier_timeout": 0}, "classifier_timeout"),
        ({"model_groups": ["nope"]}, "'nope' is not a model_name"),
        ("fast", "expected a mapping"),
    ]
    for body, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_config(config({**strategy, "complexity_router": body},
                                [None, None, None]), {})


# ---- the classifier model ----------------------------------------------------------------


def test_the_classifier_sees_the_last_user_turn_and_a_line_on_the_rest() -> None:
    body = {"messages": [
        {"role": "system", "content": "secret system prompt"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "x" * 10_000}]},
    ], "tools": TOOLS, "reasoning_effort": "medium"}
    f = complexity.features_of(body, SETTINGS.keywords)
    ask = classifier.question(body, ("small", "large"), f)
    system, user = ask["messages"]
    assert "small, large" in system["content"]
    assert "secret" not in json.dumps(ask)
    assert "first question" not in user["content"]
    assert "3 tools" in user["content"]
    assert "reasoning effort asked: medium" in user["content"]
    assert user["content"].count("x") == classifier.EXCERPT_CHARS
    assert ask["max_tokens"] == 8


def test_the_first_tier_named_in_the_answer_is_taken() -> None:
    tiers = ("small", "medium", "large")
    assert classifier.tier_in("Large.", tiers) == "large"
    assert classifier.tier_in("medium, maybe large", tiers) == "medium"
    assert classifier.tier_in("smallish", tiers) is None
    assert classifier.tier_in("", tiers) is None
    assert classifier.answer_text({"choices": [{"message": {"content": "small"}}]}) == "small"
    assert classifier.answer_text({"choices": []}) == ""
    assert classifier.answer_text({"choices": [{"message": {"content": None}}]}) == ""


def test_a_classified_tier_replaces_the_scored_one_and_says_so() -> None:
    raw = config({"routing_strategy": "complexity",
                  "complexity_router": {"classifier_model": "plain"}},
                 ["small", "medium", "large"])
    router = Router(parse_config(raw, {}))
    assert router.classifier_for("auto") == "plain"
    assert router.classifier_for("plain") is None  # never asks itself
    plan = router.plan("auto", chat("hello"), "large")
    assert [d.upstream_model for d in plan] == ["o3"]
    assert plan.route is not None
    assert plan.route.reason == "classifier plain -> large (features scored 0.00)"
    # A tier the config does not know is ignored: the score decides.
    assert router.plan("auto", chat("hello"), "huge").route.classifier is None  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="classifier_model: 'nope' is not a model_name"):
        parse_config(config({"complexity_router": {"classifier_model": "nope"}},
                            [None, None, None]), {})


def test_route_explain_says_a_classifier_would_be_asked_without_asking_it() -> None:
    from cli.route import explain

    raw = config({"routing_strategy": "complexity",
                  "complexity_router": {"classifier_model": "plain"}},
                 ["small", "medium", "large"])
    found = explain(parse_config(raw, {}), chat("hello"))
    assert found["classifier"] == "plain"
    assert found["chosen_tier"] == "small"
    assert "asks the classifier plain first" in found["reason"]
