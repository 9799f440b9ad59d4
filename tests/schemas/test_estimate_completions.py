"""Estimates for legacy text completions: the prompt and the chunks' ``text``."""

from __future__ import annotations

import json

from schemas import estimate


def test_a_text_completion_prompt_is_estimated_like_an_embedding_input() -> None:
    assert estimate.prompt_tokens({"prompt": "x" * 40}) == 10
    assert estimate.prompt_tokens({"prompt": ["abcd", "abcdefgh"]}) == 3
    assert estimate.prompt_tokens({"prompt": [1, 2, 3]}) == 3
    assert estimate.prompt_tokens({}) == 0


def test_a_text_completion_chunk_counts_its_text_parsed_or_raw() -> None:
    chunk = {"object": "text_completion",
             "choices": [{"index": 0, "text": "héllo \"you\"", "finish_reason": None}]}
    assert estimate.chunk_chars(chunk) == 11
    assert estimate.raw_chunk_chars(json.dumps(chunk).encode()) == 11
