"""Gemini embeddings: inputs into batchEmbedContents requests, answers into OpenAI lists (as
floats or base64), then through the adapter against the fake Gemini over HTTP."""

from __future__ import annotations

import base64
import struct

from starlette.applications import Starlette

from schemas.usage import TokenUsage
from tests.workers.providers.gemini_fixtures import (
    gemini_provider,  # noqa: F401 - the ``provider`` fixture
    make_call,
    serve_fake_gemini,  # noqa: F401 - the module's ``fake`` fixture
    )
from workers.providers.gemini.adapter import (
    GeminiProvider,
    from_gemini_embeddings,
    to_gemini_embed_request,
)


def test_embedding_inputs_become_batch_requests_with_dimensions() -> None:
    request = to_gemini_embed_request({"input": ["a", "b"], "dimensions": 4}, "text-embedding-004")
    assert request == {
        "requests": [
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": text}]},
                "outputDimensionality": 4,
            }
            for text in ("a", "b")
        ]
    }


def test_base64_embeddings_are_little_endian_float32() -> None:
    response, usage = from_gemini_embeddings(
        {"embeddings": [{"values": [0.5, -1.0]}]}, "e", "base64"
    )
    raw = base64.b64decode(response["data"][0]["embedding"])
    assert struct.unpack("<2f", raw) == (0.5, -1.0)
    assert usage == TokenUsage()


async def test_embeddings_come_back_as_an_openai_list(
    fake: tuple[Starlette, str], provider: GeminiProvider
) -> None:
    app, url = fake
    call = make_call(url, {"input": ["alpha", "beta"], "dimensions": 6}, "text-embedding-004")
    result = await provider.embed(call)
    assert app.state.last_path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert result.response["object"] == "list"
    assert [d["index"] for d in result.response["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 6 for d in result.response["data"])
    assert result.response["data"][0]["embedding"] != result.response["data"][1]["embedding"]
    assert result.usage == TokenUsage()
