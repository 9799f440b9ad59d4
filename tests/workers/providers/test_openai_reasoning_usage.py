"""OpenAI usage details (cached prompt tokens, reasoning tokens) read into our token usage."""

from __future__ import annotations

from schemas.usage import TokenUsage
from workers.providers.openai.adapter import split_usage


def test_openai_usage_details_become_cached_and_reasoning_tokens() -> None:
    chunk = {"id": "c", "choices": [], "usage": {
        "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 256, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0}}}
    content, usage = split_usage(chunk)
    assert content is None
    assert usage == TokenUsage(prompt_tokens=2006, completion_tokens=300, cached_tokens=1920,
                               reasoning_tokens=256)
    assert usage.to_openai()["prompt_tokens_details"] == {"cached_tokens": 1920}
