"""OpenAI's ``reasoning_effort`` in the thinking budgets of providers that count tokens.

Anthropic's ``thinking`` and Gemini's ``thinkingConfig`` take a budget in tokens where
OpenAI takes an effort word. The budgets here are ours (documented in the README); a client
that wants another budget sends the provider's native field, which wins over the effort.
Pure: the worker translates with it and the ingress reserves budget with it.
"""

from __future__ import annotations

from typing import Any

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")

# Anthropic's smallest budget is 1024 tokens; ``none`` sends no ``thinking`` at all.
ANTHROPIC_BUDGETS: dict[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
}

# Gemini 2.5 turns thinking off with a budget of 0 (Flash; Pro refuses it upstream).
GEMINI_BUDGETS: dict[str, int] = {
    "none": 0,
    "minimal": 512,
    "low": 2048,
    "medium": 8192,
    "high": 24576,
    # -1 is Gemini's dynamic thinking: the model decides, up to its own maximum.
    "xhigh": -1,
}

# The most a Gemini model thinks for (2.5 Pro); what a dynamic budget is reserved at.
GEMINI_MOST_THINKING = 32768


def effort(body: dict[str, Any]) -> str | None:
    """The request's ``reasoning_effort``, or the Responses API's ``reasoning.effort``."""
    value = body.get("reasoning_effort")
    if value is None:
        reasoning = body.get("reasoning")
        value = reasoning.get("effort") if isinstance(reasoning, dict) else None
    return value if isinstance(value, str) else None


def anthropic_thinking(body: dict[str, Any]) -> dict[str, Any] | None:
    """The ``thinking`` object to send Anthropic: the client's own, else one for its effort.
    Raises ValueError for an effort word Anthropic has no budget for."""
    native = body.get("thinking")
    if isinstance(native, dict):
        return dict(native)
    level = effort(body)
    if level is None or level == "none":
        return None
    if level not in ANTHROPIC_BUDGETS:
        raise ValueError(f"reasoning_effort must be one of {', '.join(EFFORTS)}, got {level!r}")
    return {"type": "enabled", "budget_tokens": ANTHROPIC_BUDGETS[level]}


def gemini_thinking_config(body: dict[str, Any]) -> dict[str, Any] | None:
    """The ``thinkingConfig`` to send Gemini: the client's own, an Anthropic-style
    ``thinking`` in Gemini's terms, else one for its effort. Raises ValueError for an
    unknown effort word."""
    native = body.get("thinkingConfig")
    if isinstance(native, dict):
        return dict(native)
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        if thinking.get("type") == "disabled":
            return {"thinkingBudget": 0}
        budget = thinking.get("budget_tokens")
        config: dict[str, Any] = {"includeThoughts": True}
        if isinstance(budget, int) and not isinstance(budget, bool):
            config["thinkingBudget"] = budget
        return config
    level = effort(body)
    if level is None:
        return None
    if level not in GEMINI_BUDGETS:
        raise ValueError(f"reasoning_effort must be one of {', '.join(EFFORTS)}, got {level!r}")
    if level == "none":
        return {"thinkingBudget": 0}
    return {"thinkingBudget": GEMINI_BUDGETS[level], "includeThoughts": True}


def cohere_thinking(body: dict[str, Any]) -> dict[str, Any] | None:
    """Cohere's ``thinking`` (its reasoning models): the client's own, else one for its
    effort on Anthropic's budget ladder; ``none`` disables it. Raises ValueError for an
    effort word with no budget."""
    native = body.get("thinking")
    if isinstance(native, dict):
        return dict(native)
    level = effort(body)
    if level is None:
        return None
    if level == "none":
        return {"type": "disabled"}
    if level not in ANTHROPIC_BUDGETS:
        raise ValueError(f"reasoning_effort must be one of {', '.join(EFFORTS)}, got {level!r}")
    return {"type": "enabled", "token_budget": ANTHROPIC_BUDGETS[level]}


def thinking_budget(provider: str, body: dict[str, Any]) -> int:
    """Tokens the provider may think for on top of the answer; 0 when it is not asked to
    or the budget is unknown (OpenAI counts reasoning inside ``max_completion_tokens``)."""
    try:
        if provider == "anthropic":
            thinking = anthropic_thinking(body)
            budget = thinking.get("budget_tokens") if thinking else None
        elif provider == "gemini":
            config = gemini_thinking_config(body)
            budget = config.get("thinkingBudget") if config else None
            if budget == -1:
                budget = GEMINI_MOST_THINKING
        elif provider in ("cohere", "cohere_chat"):
            thinking = cohere_thinking(body)
            budget = thinking.get("token_budget") if thinking else None
        else:
            return 0
    except ValueError:
        return 0
    if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0:
        return budget
    return 0


def max_tokens_with_thinking(requested: int | None, budget: int, default: int) -> int:
    """The output cap to send with a thinking budget. Anthropic requires the budget below
    ``max_tokens``: a cap above the budget is kept (OpenAI's ``max_completion_tokens``
    counts reasoning too); otherwise the budget is added to it (or to ``default``) so the
    answer keeps the room the client asked for."""
    if budget <= 0:
        return requested if requested is not None else default
    if requested is not None and requested > budget:
        return requested
    return budget + (requested if requested else default)
