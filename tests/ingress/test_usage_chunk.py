"""The usage chunk that ends a stream which asked for it, named after the stream's first chunk."""

from __future__ import annotations

import json
from decimal import Decimal

from ingress.dispatch.relay import usage_chunk
from schemas.usage import TokenUsage


def _chunk(raw: bytes) -> dict[str, object]:
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    parsed: dict[str, object] = json.loads(raw[len(b"data: "):])
    return parsed


def test_it_takes_the_first_chunks_id_model_and_created() -> None:
    first = b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m",' \
            b'"choices":[{"index":0,"delta":{"content":"hi"}}]}'
    chunk = _chunk(usage_chunk(first, TokenUsage(prompt_tokens=3, completion_tokens=2),
                               Decimal("0.5")))
    assert (chunk["id"], chunk["created"], chunk["model"]) == ("chatcmpl-1", 7, "m")
    assert chunk["object"] == "chat.completion.chunk" and chunk["choices"] == []
    usage = chunk["usage"]
    assert isinstance(usage, dict)
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"],
            usage["cost"]) == (3, 2, 5, 0.5)


def test_a_first_chunk_orjson_refuses_still_names_the_usage_chunk() -> None:
    # A lone surrogate, as the worker writes one (the standard library escapes it; orjson
    # refuses to read it back).
    first = b'{"id":"chatcmpl-2","created":1,"model":"m","choices":[{"delta":' \
            b'{"content":"\\ud800"}}]}'
    chunk = _chunk(usage_chunk(first, TokenUsage(prompt_tokens=1, completion_tokens=1), None))
    assert chunk["id"] == "chatcmpl-2"
    assert "cost" not in chunk["usage"]  # type: ignore[operator]


def test_a_legacy_completion_stream_ends_with_a_text_completion_chunk() -> None:
    first = b'{"id":"cmpl-3","object":"text_completion","created":1,"model":"m","choices":[]}'
    chunk = _chunk(usage_chunk(first, TokenUsage(prompt_tokens=1, completion_tokens=1), None))
    assert chunk["object"] == "text_completion"
