"""Estimated usage for streams cut off before their provider reported it."""

from __future__ import annotations

from schemas import estimate
from schemas.usage import TokenUsage


def test_prompt_estimate_counts_text_tools_images_and_messages() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "x" * 40},
            {"role": "user", "content": [
                {"type": "text", "text": "y" * 8},
                {"type": "image_url", "image_url": {"url": "data:,"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        ],
    }
    # 50 characters -> 13 tokens, 3 messages x 4, one image
    assert estimate.prompt_tokens(body) == 13 + 12 + 85
    assert estimate.prompt_tokens({"messages": "nonsense"}) == 0


def test_output_characters_come_from_text_reasoning_and_tool_arguments() -> None:
    chunk = {"choices": [{"delta": {
        "content": "abc", "reasoning_content": "de",
        "tool_calls": [{"index": 0, "function": {"name": "fn", "arguments": "{\"a\""}}],
    }}]}
    assert estimate.chunk_chars(chunk) == 3 + 2 + 2 + 4
    assert estimate.chunk_chars({"choices": [{"delta": {"role": "assistant"}}]}) == 0


def test_a_cut_stream_keeps_reported_figures_and_estimates_the_rest() -> None:
    body = {"messages": [{"role": "user", "content": "z" * 400}]}
    usage = estimate.cut_stream(None, body, output_chars=10, text_chunks=5)
    assert usage == TokenUsage(prompt_tokens=104, completion_tokens=5, estimated=True)
    # Anthropic reported its input tokens at message_start: they stand
    reported = TokenUsage(prompt_tokens=900, cached_tokens=800)
    usage = estimate.cut_stream(reported, body, output_chars=400, text_chunks=5)
    assert usage == TokenUsage(prompt_tokens=900, cached_tokens=800, completion_tokens=100,
                               estimated=True)
