"""The question put to a classifier model (``complexity_router.classifier_model``) and the
reading of its answer. Pure; the ingress sends the question through its own path.

The classifier sees the user's last turn (its first ``EXCERPT_CHARS`` characters) and one
line on what else the request holds (tools, images, turns, the reasoning effort asked
for), never the system prompt or the earlier turns: the question stays small, whatever
the conversation's size. It must answer with one of the tier names; the first tier name
found in its answer, on word bounds, is taken.
"""

from __future__ import annotations

import re
from typing import Any

from ingress.routing.complexity import Features, texts_of

EXCERPT_CHARS = 4000

_INSTRUCTIONS = (
    "You route requests to language models of different strength. Reply with exactly one "
    "word: the weakest tier that will answer the request well. Tiers, weakest first: {tiers}."
)


def last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return "\n".join(texts_of(message.get("content"))[0])
    return ""


def question(body: dict[str, Any], tiers: tuple[str, ...], features: Features) -> dict[str, Any]:
    """The chat request to send the classifier (without ``model``)."""
    excerpt = last_user_text(body)[:EXCERPT_CHARS]
    context = (f"[The request offers {features.tools} tools, holds {features.images} images "
               f"over {features.turns} turns, reasoning effort asked: "
               f"{features.reasoning_effort or 'none'}.]")
    return {
        "messages": [
            {"role": "system", "content": _INSTRUCTIONS.format(tiers=", ".join(tiers))},
            {"role": "user", "content": f"{context}\n\n{excerpt}"},
        ],
        "max_tokens": 8,
        "temperature": 0,
    }


def answer_text(completion: Any) -> str:
    """The text of an OpenAI chat completion's first choice ('' when it has none)."""
    try:
        content = completion["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


def tier_in(answer: str, tiers: tuple[str, ...]) -> str | None:
    """The first tier named in ``answer``, case-insensitively, on word bounds."""
    best: tuple[int, str] | None = None
    for tier in tiers:
        match = re.search(rf"(?<!\w){re.escape(tier)}(?!\w)", answer, re.IGNORECASE)
        if match is not None and (best is None or match.start() < best[0]):
            best = (match.start(), tier)
    return best[1] if best else None
