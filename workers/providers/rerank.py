"""The rerank answer every adapter gives, in the shape LiteLLM's proxy answers ``/rerank``.

``{"id", "results": [{"index", "relevance_score", "document"?}], "meta": {...}}``, the
results best first; ``document`` (``{"text": ...}``) only when the request asked for
``return_documents``, taken from the request itself so that every upstream answers alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.errors import ErrorInfo, ErrorKind
from workers.providers.base import UpstreamError


def document_texts(documents: Any, provider: str) -> list[str]:
    """The text of each document of a rerank request: a string, or an object with ``text``."""
    if not isinstance(documents, list):
        raise _invalid("documents must be a list", "documents", provider)
    texts: list[str] = []
    for i, document in enumerate(documents):
        if isinstance(document, str):
            texts.append(document)
        elif isinstance(document, dict) and isinstance(document.get("text"), str):
            texts.append(document["text"])
        else:
            raise _invalid(f"documents[{i}] must be a string or an object with text",
                           f"documents[{i}]", provider)
    return texts


def answer(
    answer_id: str, scored: Iterable[tuple[int, Any]], body: dict[str, Any],
    meta: dict[str, Any], provider: str,
) -> dict[str, Any]:
    """The client's answer for ``(index, relevance_score)`` pairs in the upstream's order."""
    texts = document_texts(body.get("documents"), provider)
    results: list[dict[str, Any]] = []
    for index, score in scored:
        item: dict[str, Any] = {"index": index, "relevance_score": score}
        if body.get("return_documents") and 0 <= index < len(texts):
            item["document"] = {"text": texts[index]}
        results.append(item)
    return {"id": answer_id, "results": results, "meta": meta}


def scored_results(results: Any) -> list[tuple[int, Any]]:
    """``(index, relevance_score)`` of each well-formed entry of an upstream's ``results``."""
    pairs: list[tuple[int, Any]] = []
    for result in results if isinstance(results, list) else ():
        if isinstance(result, dict) and isinstance(result.get("index"), int):
            pairs.append((result["index"], result.get("relevance_score")))
    return pairs


def _invalid(message: str, param: str, provider: str) -> UpstreamError:
    return UpstreamError(
        ErrorInfo.of(ErrorKind.INVALID_REQUEST, message, param=param, provider=provider))


def from_compatible(
    answer: dict[str, Any], body: dict[str, Any], request_id: str, provider: str
) -> tuple[dict[str, Any], int]:
    """The client's answer for an OpenAI-compatible server's Jina-shaped one (vLLM, Jina,
    Infinity: ``results`` and ``usage.total_tokens``), and the tokens it counted."""
    usage = answer.get("usage")
    tokens = 0
    if isinstance(usage, dict):
        tokens = int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
    meta: dict[str, Any] = {"billed_units": {"search_units": 1}}
    if tokens:
        meta["tokens"] = {"input_tokens": tokens, "output_tokens": 0}
    return answer_of(answer, body, request_id, meta, provider), tokens


def answer_of(
    upstream: dict[str, Any], body: dict[str, Any], request_id: str, meta: dict[str, Any],
    provider: str,
) -> dict[str, Any]:
    return answer(str(upstream.get("id") or request_id), scored_results(upstream.get("results")),
                  body, meta, provider)
