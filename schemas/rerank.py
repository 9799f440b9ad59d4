"""The request body of ``POST /v1/rerank``: Cohere's and Jina's shape, as LiteLLM's proxy
takes it. Unknown fields pass through to the upstream."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Cohere's limit on documents per call; Jina's and vLLM's are no higher.
MAX_DOCUMENTS = 10_000


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    query: str = Field(min_length=1)
    documents: list[str | dict[str, Any]] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool | None = None

    @field_validator("documents")
    @classmethod
    def _documents(cls, value: list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
        for i, document in enumerate(value):
            if isinstance(document, dict) and not isinstance(document.get("text"), str):
                raise ValueError(f"documents[{i}] must be a string or an object with a "
                                 "string text")
        return value
