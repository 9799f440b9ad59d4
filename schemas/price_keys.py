"""LiteLLM's price keys and the :class:`core.pricing.ModelPrice` field each one sets.

A deployment may write any of these in ``litellm_params`` or ``model_info`` (LiteLLM's
names, USD per token), and the shipped price table may use them as well as the short field
names. Adding a price dimension means one line here and one field on ``ModelPrice``.
"""

from __future__ import annotations

# Prompts longer than this many tokens are priced wholly at the ``_above_200k_tokens``
# tier, as LiteLLM does: the test is ``prompt_tokens > 200_000``, cached tokens included.
LONG_CONTEXT_THRESHOLD = 200_000

PRICE_KEYS: dict[str, str] = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write",
    "output_cost_per_reasoning_token": "reasoning",
    "input_cost_per_token_above_200k_tokens": "input_above_200k",
    "output_cost_per_token_above_200k_tokens": "output_above_200k",
    "cache_read_input_token_cost_above_200k_tokens": "cache_read_above_200k",
    "cache_creation_input_token_cost_above_200k_tokens": "cache_write_above_200k",
    # Per search, not per token: a rerank call's queries (Cohere's search units).
    "input_cost_per_query": "query",
}
