"""Request bodies in the OpenAPI schema for the routes that read their body themselves.

Chat completions, embeddings and batch creation parse their JSON with
:mod:`ingress.json_body` (bounded, safe) and file uploads parse multipart by hand, so
FastAPI sees no body parameter and its schema would show none. This adds them, from the
same pydantic models the routes validate with, with an example each, so that generated
clients and fuzzers know what to send.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ingress.routes.batches import CreateBatch
from schemas.batch import FILE_PURPOSES
from schemas.openai import ChatCompletionRequest, EmbeddingRequest

_REF = "#/components/schemas/{model}"

_JSON_BODIES: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {
    "/chat/completions": (ChatCompletionRequest, {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}),
    "/embeddings": (EmbeddingRequest, {"model": "text-embedding-3-small",
                                       "input": ["first text", "second text"]}),
    "/batches": (CreateBatch, {"input_file_id": "file-abc123",
                               "endpoint": "/v1/chat/completions",
                               "completion_window": "24h"}),
}

_UPLOAD = {
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "The file: JSON lines for purpose batch."},
        "purpose": {"type": "string", "enum": sorted(FILE_PURPOSES)},
    },
}


def _component(schema: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s schema registered under components (its nested models too); a ref."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    found = model.model_json_schema(ref_template=_REF)
    for name, nested in found.pop("$defs", {}).items():
        components.setdefault(name, nested)
    components[model.__name__] = found
    return {"$ref": _REF.format(model=model.__name__)}


def add_request_bodies(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (FastAPI's) with the bodies of the self-reading routes filled in."""
    for path, operations in schema.get("paths", {}).items():
        post = operations.get("post")
        if post is None or "requestBody" in post:
            continue
        suffix = path.removeprefix("/v1")
        if suffix in _JSON_BODIES:
            model, example = _JSON_BODIES[suffix]
            post["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": _component(schema, model), "example": example}}}
        elif suffix == "/files":
            post["requestBody"] = {"required": True, "content": {
                "multipart/form-data": {"schema": _UPLOAD}}}
    return schema
