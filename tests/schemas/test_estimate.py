"""Estimated usage for streams cut off before their provider reported it."""

from __future__ import annotations

import json
from typing import Any

import pytest

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


def test_embedding_input_counts_text_by_characters_and_token_arrays_exactly() -> None:
    assert estimate.embedding_tokens({"input": "x" * 40}) == 10
    # each string is tokenized on its own: at least a token each
    assert estimate.embedding_tokens({"input": ["y" * 8, "z", ""]}) == 2 + 1 + 0
    assert estimate.embedding_tokens({"input": [101, 2023, 102]}) == 3
    assert estimate.embedding_tokens({"input": [[101, 2023], [7, 8, 9]]}) == 5
    assert estimate.embedding_tokens({"input": None}) == 0
    assert estimate.embedding_tokens({"messages": [{"role": "user", "content": "x"}]}) == 0


# Each chunk with its output characters, counted by hand: the strings of content,
# reasoning_content, refusal, and a tool call's name and arguments; nothing else.
@pytest.mark.parametrize(("chunk", "chars"), [
    ({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}, 0),
    ({"choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]}, 5),
    # 'say "hi"' 8, the newline 1, 'back' 4, the backslash 1, 'slash ' 6, 'été ' 4, '中' 1
    ({"choices": [{"index": 0, "delta": {
        "content": 'say "hi"\nback\\slash \u00e9t\u00e9 \u4e2d'}}]}, 25),
    ({"choices": [{"index": 0, "delta": {"reasoning_content": "hm", "refusal": "no"}}]}, 4),
    # 'get_weather' 11 and '{"city": "Paris"}' 17
    ({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}}]}, 28),
    # the logprobs' "content" is a list and its "token" no output field: only 'a' counts
    ({"choices": [{"index": 0, "delta": {"content": "a"},
                   "logprobs": {"content": [{"token": "a", "logprob": -0.1}]}}]}, 1),
    ({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}, 0),
])
def test_a_chunk_counted_in_its_bytes_gives_what_parsing_it_gives(
    chunk: dict[str, Any], chars: int
) -> None:
    assert estimate.chunk_chars(chunk) == chars
    # as a worker frames it: compact, non-ASCII escaped
    raw = json.dumps(chunk, separators=(",", ":")).encode()
    assert estimate.raw_chunk_chars(raw) == chars
    spaced = json.dumps(chunk, ensure_ascii=False).encode()
    assert estimate.raw_chunk_chars(spaced) == chars


def test_bytes_that_are_no_chunk_count_nothing() -> None:
    assert estimate.raw_chunk_chars(b"[DONE]") == 0
    assert estimate.raw_chunk_chars(b'{"content": 3, "name": null}') == 0
