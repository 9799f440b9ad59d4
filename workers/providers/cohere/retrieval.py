"""OpenAI embeddings and rerank bodies to Cohere v2 ``/embed`` and ``/rerank`` and back,
without any I/O."""

from __future__ import annotations

import base64
import struct
from typing import Any

from schemas.errors import ErrorInfo, ErrorKind
from schemas.usage import TokenUsage
from workers.providers import rerank
from workers.providers.base import UpstreamError
from workers.providers.cohere.translate import PROVIDER

# OpenAI's embedding purposes are unknown to it; Cohere needs one for v3+ models. A
# document store is the common caller, so that is the default.
DEFAULT_INPUT_TYPE = "search_document"
INPUT_TYPES = frozenset(
    {"search_document", "search_query", "classification", "clustering", "image"})


def _invalid(message: str, param: str | None = None) -> UpstreamError:
    return UpstreamError(
        ErrorInfo.of(ErrorKind.INVALID_REQUEST, message, param=param, provider=PROVIDER)
    )


# --- embeddings -----------------------------------------------------------------------------


def to_cohere_embed(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """The v2 ``/embed`` body for an OpenAI embeddings body. Cohere's own ``input_type``
    may ride along in the body; ``dimensions`` becomes ``output_dimension``."""
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise _invalid("cohere embeds text: input must be a string or a list of strings",
                       "input")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise _invalid("encoding_format must be float or base64", "encoding_format")
    input_type = body.get("input_type") or DEFAULT_INPUT_TYPE
    if input_type not in INPUT_TYPES:
        raise _invalid(f"input_type must be one of {sorted(INPUT_TYPES)}", "input_type")
    request: dict[str, Any] = {
        "model": upstream_model,
        "texts": texts,
        "input_type": input_type,
        "embedding_types": ["float"],
    }
    if body.get("dimensions") is not None:
        request["output_dimension"] = body["dimensions"]
    if body.get("truncate") is not None:
        request["truncate"] = body["truncate"]
    return request


def _billed(answer: dict[str, Any]) -> dict[str, Any]:
    meta = answer.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, dict) else None
    return billed if isinstance(billed, dict) else {}


def from_cohere_embed(
    answer: dict[str, Any], model: str, encoding_format: str | None = None
) -> tuple[dict[str, Any], TokenUsage]:
    """OpenAI's embeddings list for a v2 embed answer, and its usage. OpenAI's ``base64``
    form (its SDK's default) is the raw little-endian float32 array, made here from the
    floats Cohere sends."""
    embeddings = answer.get("embeddings")
    vectors = embeddings.get("float") if isinstance(embeddings, dict) else embeddings
    if not isinstance(vectors, list):
        raise UpstreamError(ErrorInfo.of(
            ErrorKind.SERVER, f"{PROVIDER} sent embeddings without float vectors",
            provider=PROVIDER))
    usage = TokenUsage(prompt_tokens=int(_billed(answer).get("input_tokens") or 0))
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i,
                  "embedding": _packed(v) if encoding_format == "base64" else v}
                 for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
    }, usage


def _packed(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


# --- rerank ---------------------------------------------------------------------------------


def to_cohere_rerank(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """The v2 ``/rerank`` body; documents given as ``{"text": ...}`` objects become text.
    ``return_documents`` is answered by us (v2 no longer sends documents back)."""
    request: dict[str, Any] = {
        "model": upstream_model,
        "query": body.get("query"),
        "documents": rerank.document_texts(body.get("documents"), PROVIDER),
    }
    for name in ("top_n", "max_tokens_per_doc"):
        if body.get(name) is not None:
            request[name] = body[name]
    return request


def from_cohere_rerank(
    answer: dict[str, Any], body: dict[str, Any], request_id: str
) -> tuple[dict[str, Any], TokenUsage]:
    """The client's rerank answer and its usage: the search units Cohere bills (one per
    call when it does not say)."""
    billed = _billed(answer)
    queries = int(billed.get("search_units") or 1)
    meta = dict(answer.get("meta") or {})
    meta["billed_units"] = {**billed, "search_units": queries}
    response = rerank.answer(str(answer.get("id") or request_id),
                             rerank.scored_results(answer.get("results")), body, meta, PROVIDER)
    return response, TokenUsage(prompt_tokens=int(billed.get("input_tokens") or 0),
                                queries=queries)
