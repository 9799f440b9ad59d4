"""``router_settings.complexity_router``: the tiers, thresholds and feature weights of the
``complexity`` routing strategy (see :mod:`ingress.routing.complexity`).

A request's score is the sum of its features' contributions, each ``weight x strength``
with the strength in [0, 1], capped at 1. The score needs the highest tier whose threshold
it reaches; the first tier needs nothing. With ``classifier_model``, that model is asked for
the tier instead, and the score decides only when it gives none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.config_values import ConfigError, problems

FEATURES = ("length", "tools", "code", "images", "depth", "reasoning", "keywords")

DEFAULT_WEIGHTS: dict[str, float] = {
    "length": 0.30,     # the prompt's estimated tokens, up to ``long_prompt_tokens``
    "tools": 0.20,      # half for one tool, all of it from five
    "code": 0.25,       # a fenced block, or four code-like lines
    "images": 0.15,     # any image part
    "depth": 0.10,      # user and assistant turns past two, all of it from twelve
    "reasoning": 0.55,  # reasoning_effort: half for medium, all of it for high
    "keywords": 0.40,   # words of hard tasks: half for one, all of it from two
}

# Words of tasks that reward a stronger model, matched case-insensitively on word bounds
# in the text of the user's turns.
DEFAULT_KEYWORDS: tuple[str, ...] = (
    "prove", "proof", "derive", "derivation", "step by step", "step-by-step", "optimize",
    "optimise", "optimization", "theorem", "lemma", "rigorous", "rigorously", "formally",
    "algorithm", "time complexity", "refactor", "debug", "race condition", "concurrency",
    "deadlock", "trade-offs", "tradeoffs", "architecture", "analyze", "analyse",
    "edge cases", "invariant", "asymptotic", "integral", "counterexample", "distributed",
)


class ComplexitySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Weakest first; a deployment declares one of them (``model_info.tier``).
    tiers: tuple[str, ...] = ("small", "medium", "large")
    # The least score that needs each tier but the first.
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {"medium": 0.15, "large": 0.40})
    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    keywords: tuple[str, ...] = DEFAULT_KEYWORDS
    long_prompt_tokens: int = Field(default=4000, ge=1)
    # Groups routed by complexity even when ``routing_strategy`` is another one.
    model_groups: tuple[str, ...] = ()
    # An alias in model_list asked for the tier instead (through the gateway's own path);
    # the feature score decides when it fails, is slower than the timeout, or says no tier.
    classifier_model: str | None = None
    classifier_timeout: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> ComplexitySettings:
        if not self.tiers or len(set(self.tiers)) != len(self.tiers):
            raise ValueError("tiers: expected a list of distinct names, weakest first")
        if any(not isinstance(t, str) or not t.strip() for t in self.tiers):
            raise ValueError("tiers: a tier name is empty")
        unknown = [t for t in self.thresholds if t not in self.tiers]
        if unknown:
            raise ValueError(f"thresholds: {', '.join(unknown)} not among the tiers "
                             f"({', '.join(self.tiers)})")
        missing = [t for t in self.tiers[1:] if t not in self.thresholds]
        if missing:
            raise ValueError(f"thresholds: no threshold for {', '.join(missing)}")
        levels = [self.thresholds[t] for t in self.tiers[1:]]
        if any(not 0 <= v <= 1 for v in levels) or levels != sorted(levels):
            raise ValueError("thresholds: expected numbers in [0, 1], rising with the tiers")
        bad = [f for f in self.weights if f not in FEATURES]
        if bad:
            raise ValueError(f"weights: unknown feature {', '.join(bad)} "
                             f"(known: {', '.join(FEATURES)})")
        if any(v < 0 for v in self.weights.values()):
            raise ValueError("weights: expected numbers of 0 or more")
        return self

    def weight(self, feature: str) -> float:
        return self.weights.get(feature, DEFAULT_WEIGHTS[feature])

    def rank(self, tier: str | None) -> int:
        """A tier's place, weakest 0; an undeclared tier counts as the strongest."""
        return self.tiers.index(tier) if tier in self.tiers else len(self.tiers) - 1

    def tier_for(self, score: float) -> str:
        needed = self.tiers[0]
        for tier in self.tiers[1:]:
            if score >= self.thresholds[tier]:
                needed = tier
        return needed


def parse_complexity(value: Any, where: str, models: set[str]) -> ComplexitySettings:
    if value is None:
        return ComplexitySettings()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    known = set(ComplexitySettings.model_fields)
    unknown = [str(k) for k in value if k not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    for name in value.get("model_groups") or ():
        if name not in models:
            raise ConfigError(f"{where}.model_groups: {name!r} is not a model_name in model_list")
    judge = value.get("classifier_model")
    if judge is not None and judge not in models:
        raise ConfigError(f"{where}.classifier_model: {judge!r} is not a model_name in model_list")
    values = dict(value)
    if isinstance(values.get("weights"), Mapping):
        values["weights"] = {**DEFAULT_WEIGHTS, **values["weights"]}
    try:
        return ComplexitySettings(**values)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {problems(exc)}") from None
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
