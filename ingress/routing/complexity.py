"""The ``complexity`` routing strategy: score a request, send it to the cheapest tier that
covers the score. Pure.

Every feature is one a person can check by reading the request:

=============  ==========================================================================
``length``     the prompt's estimated tokens (:func:`schemas.estimate.prompt_tokens`)
``tools``      how many tools the request offers
``code``       fenced code blocks, else lines that look like code
``images``     image parts in the messages
``depth``      user and assistant turns so far
``reasoning``  the ``reasoning_effort`` asked for (or ``reasoning.effort``)
``keywords``   words of hard tasks ("prove", "step by step", ...) in the user's turns
=============  ==========================================================================

With ``classifier_model`` set, a model is asked for the tier instead
(:mod:`ingress.routing.classifier`) and the score stands when it gives none.

Each gives a strength in [0, 1]; the score is the sum of ``weight x strength``, capped at
1 (weights in :mod:`schemas.complexity_config`). The score needs a tier; the group's
deployments of that tier or stronger are tried weakest tier first and, within a tier,
cheapest first, so a failing or cooling-down cheap deployment falls back *up*. Weaker
deployments are never tried: a hard prompt answered badly is worse than a dearer answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from functools import lru_cache
from typing import Any

from schemas.complexity_config import ComplexitySettings
from schemas.config import Deployment
from schemas.estimate import prompt_tokens

TIER_HEADER = "x-aigw-route-tier"
SCORE_HEADER = "x-aigw-route-score"
REASON_HEADER = "x-aigw-route-reason"

# Only the first characters of a huge prompt are scanned for code and keywords: the
# length feature already says it is long, and a regex over megabytes would stall the loop.
SCAN_CHARS = 100_000

_EFFORT = {"medium": 0.5, "high": 1.0, "xhigh": 1.0}
_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)
_CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import |function |const |let |var |public |"
    r"private |static |#include|fn |func |package |SELECT |INSERT |UPDATE |CREATE |"
    r"(?:if|for|while|switch)\s*\(|return\b|\}|@\w+)"
    r"|[;{]\s*$|=>|::|\w+\([^)]*\)\s*;?\s*$",
    re.MULTILINE,
)


@dataclass(frozen=True, slots=True)
class Features:
    prompt_tokens: int = 0
    tools: int = 0
    code_fences: int = 0
    code_lines: int = 0
    images: int = 0
    turns: int = 0
    reasoning_effort: str | None = None
    keywords: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Decision:
    """What the score asks for, and why."""

    score: float
    tier: str
    features: Features
    # Each feature's share of the score, largest first; features that add nothing are left out.
    contributions: dict[str, float] = field(default_factory=dict)
    # The classifier model whose answer set ``tier``, if one did.
    classifier: str | None = None

    @property
    def reason(self) -> str:
        if self.classifier is not None:
            return (f"classifier {self.classifier} -> {self.tier} "
                    f"(features scored {self.score:.2f})")
        if not self.contributions:
            return f"score {self.score:.2f} -> {self.tier}: no sign of a hard task"
        parts = [f"{_detail(name, self.features)} +{value:.2f}"
                 for name, value in self.contributions.items()]
        return f"score {self.score:.2f} -> {self.tier}: {', '.join(parts)}"


@dataclass(frozen=True, slots=True)
class RouteNote:
    """What one attempt's tier was and why: its response headers and usage event say it."""

    tier: str
    score: float
    reason: str

    def headers(self) -> dict[str, str]:
        # Header values are latin-1 on the wire; a configured keyword may not be.
        reason = self.reason.encode("ascii", "replace").decode("ascii")
        return {TIER_HEADER: self.tier, SCORE_HEADER: str(self.score),
                REASON_HEADER: reason}


def _detail(name: str, f: Features) -> str:
    if name == "length":
        return f"~{f.prompt_tokens} prompt tokens"
    if name == "tools":
        return f"{f.tools} tool{'s' if f.tools != 1 else ''}"
    if name == "code":
        return (f"{f.code_fences} code block{'s' if f.code_fences != 1 else ''}"
                if f.code_fences else f"{f.code_lines} code-like lines")
    if name == "images":
        return f"{f.images} image{'s' if f.images != 1 else ''}"
    if name == "depth":
        return f"{f.turns} turns"
    if name == "reasoning":
        return f"reasoning_effort {f.reasoning_effort}"
    return "keywords " + "/".join(f.keywords)


@lru_cache(maxsize=16)
def _keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    words = sorted({k.strip().lower() for k in keywords if k.strip()}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)",
                      re.IGNORECASE)


def texts_of(content: Any) -> tuple[list[str], int]:
    """The text parts of one message's content, and how many images it holds."""
    if isinstance(content, str):
        return [content], 0
    texts: list[str] = []
    images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") in ("image_url", "input_image", "image"):
                images += 1
    return texts, images


def _effort(body: dict[str, Any]) -> str | None:
    effort = body.get("reasoning_effort")
    if effort is None and isinstance(body.get("reasoning"), dict):
        effort = body["reasoning"].get("effort")
    return effort.lower() if isinstance(effort, str) else None


def features_of(body: dict[str, Any], keywords: tuple[str, ...]) -> Features:
    messages = body.get("messages")
    messages = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    every: list[str] = []
    said: list[str] = []
    images = turns = 0
    for message in messages:
        texts, pictures = texts_of(message.get("content"))
        images += pictures
        every += texts
        role = message.get("role")
        if role == "user":
            said += texts
        if role in ("user", "assistant"):
            turns += 1
    text = "\n".join(every)[:SCAN_CHARS]
    pattern = _keyword_pattern(keywords)
    found: dict[str, None] = {}
    if pattern is not None:
        for match in pattern.finditer("\n".join(said)[:SCAN_CHARS]):
            found.setdefault(match.group(1).lower(), None)
    tools = body.get("tools")
    functions = body.get("functions")  # OpenAI's older name for tools
    offered = tools if isinstance(tools, list) else functions if isinstance(functions, list) else []
    fences = len(_FENCE.findall(text)) // 2
    return Features(
        prompt_tokens=prompt_tokens(body),
        tools=len(offered),
        code_fences=fences,
        code_lines=0 if fences else len(_CODE_LINE.findall(text)),
        images=images,
        turns=turns,
        reasoning_effort=_effort(body),
        keywords=tuple(found),
    )


def strengths(f: Features, settings: ComplexitySettings) -> dict[str, float]:
    """Each feature's strength in [0, 1]."""
    return {
        "length": min(1.0, f.prompt_tokens / settings.long_prompt_tokens),
        "tools": 0.0 if not f.tools else min(1.0, 0.5 + (f.tools - 1) / 8),
        "code": 1.0 if f.code_fences else min(1.0, f.code_lines / 4),
        "images": 1.0 if f.images else 0.0,
        "depth": min(1.0, max(0, f.turns - 2) / 10),
        "reasoning": _EFFORT.get(f.reasoning_effort or "", 0.0),
        "keywords": min(1.0, len(f.keywords) / 2),
    }


def score(f: Features, settings: ComplexitySettings) -> tuple[float, dict[str, float]]:
    """The score (to 3 decimals) and each feature's contribution to it (those above 0,
    largest first)."""
    parts = {name: round(settings.weight(name) * s, 4)
             for name, s in strengths(f, settings).items()}
    kept = dict(sorted(((k, v) for k, v in parts.items() if v >= 0.005),
                       key=lambda kv: -kv[1]))
    return min(1.0, round(sum(parts.values()), 3)), kept


def decide(body: dict[str, Any], settings: ComplexitySettings) -> Decision:
    f = features_of(body, settings.keywords)
    value, parts = score(f, settings)
    return Decision(score=value, tier=settings.tier_for(value), features=f, contributions=parts)


def classified(decision: Decision, tier: str, classifier: str) -> Decision:
    """``decision`` with the tier a classifier model answered."""
    return replace(decision, tier=tier, classifier=classifier)


PriceOf = Callable[[Deployment], Decimal | None]


def order(
    group: Sequence[Deployment], decision: Decision, settings: ComplexitySettings,
    price: PriceOf,
) -> list[Deployment]:
    """The deployments to try: those of the tier the decision needs or stronger, weakest
    tier first and cheapest first within one (unpriced last); ties keep ``group``'s order,
    the rotation's. When no deployment covers the need, the strongest there are."""
    if not group:
        return []
    ranks = {d.id: settings.rank(d.tier) for d in group}
    needed = settings.rank(decision.tier)
    covering = [d for d in group if ranks[d.id] >= needed]
    if not covering:
        top = max(ranks.values())
        covering = [d for d in group if ranks[d.id] == top]

    def key(d: Deployment) -> tuple[int, bool, Decimal]:
        cost = price(d)
        return (ranks[d.id], cost is None, cost if cost is not None else Decimal(0))

    return sorted(covering, key=key)


def note(decision: Decision, deployment: Deployment, settings: ComplexitySettings) -> RouteNote:
    """The route of one attempt: the tier it went to and why."""
    served = deployment.tier if deployment.tier in settings.tiers else settings.tiers[-1]
    reason = decision.reason
    if served != decision.tier:
        if settings.rank(served) > settings.rank(decision.tier):
            reason += f"; up to {served}: no {decision.tier} deployment available"
        else:
            reason += f"; {served}: the strongest tier this group has"
    return RouteNote(tier=served, score=decision.score, reason=reason)
