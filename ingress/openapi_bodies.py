"""Request bodies in the OpenAPI schema for the routes that read their body themselves.

Chat completions, embeddings and batch creation parse their JSON with
:mod:`ingress.json_body` (bounded, safe) and file uploads parse multipart by hand, so
FastAPI sees no body parameter and its schema would show none. This adds them, from the
same pydantic models the routes validate with, with an example each, so that generated
clients and fuzzers know what to send.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from ingress.routes.batches import CreateBatch
from schemas.anthropic import CountTokensRequest, MessagesRequest
from schemas.batch import FILE_EXPIRY_MAX, FILE_EXPIRY_MIN, FILE_PURPOSES
from schemas.media import ImageRequest, SpeechRequest
from schemas.moderation import ModerationRequest
from schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from schemas.rerank import RerankRequest
from schemas.responses import ResponsesRequest

_REF = "#/components/schemas/{model}"

_JSON_BODIES: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {
    "/chat/completions": (ChatCompletionRequest, {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}),
    "/embeddings": (EmbeddingRequest, {"model": "text-embedding-3-small",
                                       "input": ["first text", "second text"]}),
    "/responses": (ResponsesRequest, {"model": "gpt-4o-mini", "input": "Say hello",
                                      "instructions": "Be brief"}),
    "/messages": (MessagesRequest, {"model": "claude-sonnet-4-20250514", "max_tokens": 256,
                                    "messages": [{"role": "user", "content": "Say hello"}]}),
    "/messages/count_tokens": (CountTokensRequest, {
        "model": "claude-sonnet-4-20250514",
        "messages": [{"role": "user", "content": "Say hello"}]}),
    "/completions": (CompletionRequest, {"model": "gpt-3.5-turbo-instruct",
                                         "prompt": "Once upon a time"}),
    "/images/generations": (ImageRequest, {"model": "dall-e-3", "prompt": "A lighthouse",
                                           "size": "1024x1024", "response_format": "url"}),
    "/audio/speech": (SpeechRequest, {"model": "tts-1", "voice": "alloy",
                                      "input": "Hello there"}),
    "/rerank": (RerankRequest, {"model": "rerank-v3.5", "query": "What is NATS?",
                                "documents": ["A messaging system.", "A kind of insect."],
                                "top_n": 1, "return_documents": True}),
    "/moderations": (ModerationRequest, {"model": "omni-moderation-latest",
                                         "input": "Is this fine?"}),
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
        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
        "expires_after[seconds]": {"type": "integer", "minimum": FILE_EXPIRY_MIN,
                                   "maximum": FILE_EXPIRY_MAX},
    },
}

_BINARY = {"type": "string", "format": "binary"}
_TRANSCRIBE = {
    "type": "object",
    "required": ["file", "model"],
    "properties": {
        "file": {**_BINARY, "description": "The audio (mp3, mp4, mpeg, mpga, m4a, wav, webm)."},
        "model": {"type": "string"},
        "language": {"type": "string"}, "prompt": {"type": "string"},
        "response_format": {"type": "string",
                            "enum": ["json", "text", "srt", "verbose_json", "vtt"]},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
_EDIT = {
    "type": "object",
    "required": ["image", "prompt", "model"],
    "properties": {
        "image": {**_BINARY, "description": "The PNG image to edit."},
        "mask": {**_BINARY, "description": "Where to edit: its transparent pixels."},
        "prompt": {"type": "string"}, "model": {"type": "string"},
        "n": {"type": "integer", "minimum": 1, "maximum": 10}, "size": {"type": "string"},
        "response_format": {"type": "string", "enum": ["url", "b64_json"]},
    },
}
_FORMS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "/audio/transcriptions": (_TRANSCRIBE, {"model": "whisper-1", "file": "RIFF"}),
    "/audio/translations": (_TRANSCRIBE, {"model": "whisper-1", "file": "RIFF"}),
    "/images/edits": (_EDIT, {"model": "dall-e-2", "prompt": "Add a hat",
                              "image": "\x89PNG"}),
}

# A one-line batch for the chat model the examples name: a file uploaded as this example
# makes a batch that runs, so a client (or a stateful fuzzer following the links below)
# gets from an upload to a batch. The file part is the text itself (the file's content).
_BATCH_LINE = json.dumps({
    "custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions",
    "body": _JSON_BODIES["/chat/completions"][1]})
_UPLOAD_EXAMPLE = {"file": _BATCH_LINE + "\n", "purpose": "batch"}

# What a created object's id leads to, as OpenAPI links (clients and stateful fuzzers
# follow them): (method, path of the creating operation) -> link name -> (method, path,
# parameters, request body) of the operation it feeds. Only the /v1 paths carry them: the
# unversioned aliases are the same handlers under other operationIds, left without links
# so that a chain is described (and fuzzed) once.
_ID = "$response.body#/id"
_LINKS: dict[tuple[str, str], dict[str, tuple[str, str, dict[str, str], Any]]] = {
    ("post", "/v1/files"): {
        "RetrieveFile": ("get", "/v1/files/{file_id}", {"file_id": _ID}, None),
        "FileContent": ("get", "/v1/files/{file_id}/content", {"file_id": _ID}, None),
        "DeleteFile": ("delete", "/v1/files/{file_id}", {"file_id": _ID}, None),
        "CreateBatch": ("post", "/v1/batches", {}, {
            "input_file_id": _ID, "endpoint": "/v1/chat/completions",
            "completion_window": "24h"}),
    },
    ("post", "/v1/batches"): {
        "RetrieveBatch": ("get", "/v1/batches/{batch_id}", {"batch_id": _ID}, None),
        "CancelBatch": ("post", "/v1/batches/{batch_id}/cancel", {"batch_id": _ID}, None),
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
                "multipart/form-data": {"schema": _UPLOAD, "example": _UPLOAD_EXAMPLE}}}
        elif suffix in _FORMS:
            form, example = _FORMS[suffix]
            post["requestBody"] = {"required": True, "content": {
                "multipart/form-data": {"schema": form, "example": example}}}
    _add_links(schema)
    return schema


def _add_links(schema: dict[str, Any]) -> None:
    """The links of :data:`_LINKS` on each creating operation's 200 response, naming the
    operations they lead to by the ids FastAPI gave them."""
    paths = schema.get("paths", {})
    for (method, path), links in _LINKS.items():
        source = paths.get(path, {}).get(method)
        if source is None:
            continue
        found: dict[str, Any] = {}
        for name, (to_method, to_path, parameters, body) in links.items():
            target = paths.get(to_path, {}).get(to_method)
            if target is None or "operationId" not in target:
                continue
            link: dict[str, Any] = {"operationId": target["operationId"]}
            if parameters:
                link["parameters"] = parameters
            if body is not None:
                # The body a link names is the whole body (OpenAPI's meaning), not fields
                # for a fuzzer to mix into one it made up: say so to Schemathesis.
                link["requestBody"] = body
                link["x-schemathesis"] = {"merge_body": False}
            found[name] = link
        if not found:
            continue
        # Both routes answer 200 (FastAPI's default; neither sets a status_code).
        ok = source.setdefault("responses", {}).setdefault(
            "200", {"description": "Successful Response"})
        ok["links"] = found
