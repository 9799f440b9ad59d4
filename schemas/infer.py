"""The message an ingress publishes for one attempt at one deployment."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal[1] = 1


class Endpoint(StrEnum):
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    RERANK = "rerank"
    MODERATIONS = "moderations"
    # Images and audio (schemas/media.py): OpenAI-compatible upstreams only.
    IMAGES = "images"
    IMAGE_EDITS = "image_edits"
    TRANSCRIPTIONS = "transcriptions"
    TRANSLATIONS = "translations"
    SPEECH = "speech"
    # Anthropic's Messages API: the body and the streamed events are Anthropic's, passed
    # through to an Anthropic deployment and translated for any other (workers/protocols).
    MESSAGES = "messages"
    # Legacy text completions (``/v1/completions``), OpenAI-compatible upstreams only.
    COMPLETIONS = "completions"
    # OpenAI Responses, translated at the ingress: the body is a chat request, answered as
    # chat is by every provider; accounted under its own name.
    RESPONSES = "responses"


class InferRequest(BaseModel):
    """One attempt. The worker resolves ``deployment_id`` from its own configuration, so
    provider secrets never travel on the bus."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: str
    attempt: int = 0
    endpoint: Endpoint
    deployment_id: str
    model_alias: str
    body: dict[str, Any]
    stream: bool = False
    heartbeat_interval: float = Field(default=2.0, gt=0)
    # Who the call is for, carried so the worker's usage event can say so.
    key_id: str | None = None
    team_id: str | None = None
    end_user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    batch_id: str | None = None
    # The client's protocol headers a native pass-through sends on (``anthropic-beta`` on
    # /v1/messages to an Anthropic deployment); empty for every other call.
    headers: dict[str, str] = Field(default_factory=dict)
    # The complexity router's tier for this attempt, the request's score and why, for
    # the usage event (None when the group is not routed by complexity).
    route_tier: str | None = None
    route_score: float | None = None
    route_reason: str | None = None
