"""Budget arithmetic: what a request may cost at most, and when budget periods turn over.

Everything here is pure. A reservation is an upper bound that is cheap to compute: the
prompt is estimated from its characters (about four per token, no tokenizer on the hot
path) and the output is the most the request allows. The real cost replaces the
reservation when the request settles.
"""

from __future__ import annotations

import functools
import json
import math
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol

from schemas.reasoning import max_tokens_with_thinking

# Output cap assumed when a request sets none; the ingress setting overrides it.
DEFAULT_MAX_OUTPUT_TOKENS = 4096

CHARS_PER_TOKEN = 4
# OpenAI's chat format adds a few tokens around every message and primes the reply.
MESSAGE_OVERHEAD_TOKENS = 4
REPLY_PRIMING_TOKENS = 3
# A high-detail 1024x1024 image at OpenAI's tile pricing; audio and files get the same
# flat guess. Reading base64 payload lengths would cost more than it tells.
MEDIA_PART_TOKENS = 765

_CENT = Decimal("0.01")


class TokenPrice(Protocol):
    """USD per token; ``core.pricing.ModelPrice`` is one."""

    @property
    def input(self) -> Decimal: ...

    @property
    def output(self) -> Decimal: ...


def reserve_cost(
    prompt_tokens_estimate: int, max_output_tokens: int, price: TokenPrice | None
) -> Decimal:
    """The most a request can cost. Unknown price: zero, so it is held by rate limits and
    by a budget already spent, but reserves nothing (its real cost is unknown too)."""
    if price is None:
        return Decimal(0)
    # A prompt past a long-context threshold is priced at that tier (``ModelPrice``).
    for_prompt = getattr(price, "for_prompt", None)
    if callable(for_prompt):
        price = for_prompt(prompt_tokens_estimate)
        assert price is not None
    output_price = price.output
    # A model that prices reasoning above other output could bill every output token at it.
    reasoning = getattr(price, "reasoning", None)
    if isinstance(reasoning, Decimal) and reasoning > output_price:
        output_price = reasoning
    cost = prompt_tokens_estimate * price.input + max_output_tokens * output_price
    # A reranker's price per search: each call is one.
    query = getattr(price, "query", None)
    if isinstance(query, Decimal):
        cost += query
    return cost


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _content_tokens(content: Any) -> int:
    """Chat ``content``: a string, or a list of parts (OpenAI and Anthropic shapes)."""
    if content is None:
        return 0
    if isinstance(content, str):
        return _text_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += _text_tokens(part)
            elif isinstance(part, dict):
                total += _part_tokens(part)
        return total
    if isinstance(content, dict):
        return _part_tokens(content)
    return 0


def _part_tokens(part: dict[str, Any]) -> int:
    kind = part.get("type")
    if kind in ("image_url", "image", "input_image", "input_audio", "file", "document"):
        return MEDIA_PART_TOKENS
    total = 0
    for name in ("text", "thinking", "refusal"):
        value = part.get(name)
        if isinstance(value, str):
            total += _text_tokens(value)
    if kind == "tool_use":
        total += _text_tokens(json.dumps(part.get("input", {})))
    if kind == "tool_result":
        total += _content_tokens(part.get("content"))
    return total


def _message_tokens(message: Any) -> int:
    if not isinstance(message, dict):
        return 0
    total = MESSAGE_OVERHEAD_TOKENS + _content_tokens(message.get("content"))
    for call in message.get("tool_calls") or ():
        function = call.get("function", {}) if isinstance(call, dict) else {}
        total += _text_tokens(str(function.get("name", "")))
        total += _text_tokens(str(function.get("arguments", "")))
    return total


def _input_tokens(value: Any) -> int:
    """Embeddings/legacy ``input``/``prompt``: text, texts, or already token ids."""
    if isinstance(value, str):
        return _text_tokens(value)
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value):
            return len(value)
        return sum(_input_tokens(v) for v in value)
    return 0


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A cheap estimate of a request's input tokens: characters / 4 of every text part,
    a per-message overhead, a flat guess per image or audio part, and tool schemas."""
    total = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        total += sum(_message_tokens(m) for m in messages) + REPLY_PRIMING_TOKENS
    # Anthropic's system prompt sits beside the messages.
    total += _content_tokens(body.get("system"))
    for name in ("input", "prompt"):
        if name in body:
            value = body[name]
            # The Responses API's ``input`` is a list of messages.
            if isinstance(value, list) and value and isinstance(value[0], dict):
                total += sum(_message_tokens(m) for m in value)
            else:
                total += _input_tokens(value)
    tools = body.get("tools")
    if tools:
        total += _text_tokens(json.dumps(tools, separators=(",", ":")))
    documents = body.get("documents")  # a rerank's, strings or {"text": ...}
    if isinstance(documents, list):
        total += _input_tokens(body.get("query")) + sum(
            _input_tokens(d.get("text") if isinstance(d, dict) else d) for d in documents)
    return total


def max_output_tokens(
    body: dict[str, Any],
    default: int = DEFAULT_MAX_OUTPUT_TOKENS,
    *,
    generates: bool = True,
    thinking_budget: int = 0,
) -> int:
    """The most output tokens a request may produce, over all its ``n`` choices.
    ``generates=False`` for endpoints that produce no tokens (embeddings). A thinking
    budget (``schemas.reasoning.thinking_budget``) raises the cap as the worker raises the
    upstream's ``max_tokens``."""
    if not generates:
        return 0
    requested: int | None = None
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            requested = value
            break
    cap = max_tokens_with_thinking(requested, thinking_budget, default)
    choices = body.get("n")
    if isinstance(choices, int) and not isinstance(choices, bool) and choices > 1:
        cap *= choices
    return cap


def period_keys(now: datetime) -> tuple[str, str]:
    """The UTC day ("YYYYMMDD") and month ("YYYYMM") that ``now`` falls in."""
    utc = now.astimezone(UTC)
    return _period_keys(utc.year, utc.month, utc.day)


@functools.lru_cache(maxsize=8)
def _period_keys(year: int, month: int, day: int) -> tuple[str, str]:
    # Two strftime calls per admit and per settle, for a value that changes once a day.
    return f"{year:04d}{month:02d}{day:02d}", f"{year:04d}{month:02d}"


def reset_times(now: datetime) -> tuple[datetime, datetime]:
    """When the current UTC day and month end."""
    utc = now.astimezone(UTC)
    day_start = utc.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    return day_start + timedelta(days=1), next_month


def usd(amount: Decimal) -> str:
    return f"${amount.quantize(_CENT, rounding=ROUND_HALF_EVEN)}"


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def budget_exceeded_message(
    scope_kind: str,
    scope_name: str,
    period: str,
    budget: Decimal,
    spent: Decimal,
    resets_at: datetime,
    *,
    reserved: Decimal = Decimal(0),
    requested: Decimal = Decimal(0),
) -> str:
    """The 429 text, e.g. "Budget exceeded: key ci-bot daily budget $5.00 (spent $5.01);
    resets at 2026-11-23T00:00:00Z". When the budget is not spent yet, the message says
    what is holding it: requests in flight, or this request's own maximum cost."""
    text = f"Budget exceeded: {scope_kind} {scope_name} {period} budget {usd(budget)}"
    detail = f"spent {usd(spent)}"
    if spent < budget:
        if reserved > 0:
            detail += f", {usd(reserved)} reserved by requests in flight"
        if requested > 0:
            detail += f", this request may cost up to {usd(requested)}"
    return f"{text} ({detail}); resets at {iso_z(resets_at)}"


def rate_limit_message(
    scope_kind: str,
    scope_name: str,
    kind: str,
    limit: int,
    used: int,
    requested: int,
    retry_after: float | None,
) -> str:
    """OpenAI's wording, so people and tools that parse it recognise it."""
    unit = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)"}.get(
        kind, "parallel requests"
    )
    text = (
        f"Rate limit reached for {scope_kind} {scope_name} on {unit}: "
        f"Limit {limit}, Used {used}, Requested {requested}."
    )
    if retry_after is None:
        return text + " This request alone exceeds the limit; make it smaller."
    return text + f" Please try again in {retry_after:.3f}s."
