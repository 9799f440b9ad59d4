"""Token usage of one upstream call, in OpenAI's terms.

``prompt_tokens`` counts every input token, cached ones included; ``cached_tokens`` and
``cache_write_tokens`` say how many of those were read from or written to a provider cache.
``completion_tokens`` counts every output token, reasoning included; ``reasoning_tokens``
says how many of those were reasoning.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class MediaUsage(BaseModel):
    """What an images or audio call used, in the units it is priced by."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    images: int = 0
    # The size (``1024x1792``) and quality (``hd``) the images were made at.
    image_size: str | None = None
    image_quality: str | None = None
    # Seconds of audio sent (transcription, translation) and made (speech, when measurable).
    seconds: Decimal = Decimal(0)
    output_seconds: Decimal = Decimal(0)
    # Characters of text turned into speech.
    characters: int = 0


class TokenUsage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    # Searches billed per query rather than per token (a rerank call's search units).
    queries: int = 0
    # True when the provider never reported these figures (a stream cut off before its
    # final usage) and they were estimated from the text sent and received.
    estimated: bool = False
    # Images made, audio seconds, characters: set for images and audio calls only.
    media: MediaUsage | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_openai(self) -> dict[str, Any]:
        """The ``usage`` object of an OpenAI response."""
        prompt_details: dict[str, int] = {"cached_tokens": self.cached_tokens}
        if self.cache_write_tokens:
            prompt_details["cache_write_tokens"] = self.cache_write_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": prompt_details,
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }

    @classmethod
    def from_openai(cls, usage: dict[str, Any] | None) -> TokenUsage:
        """Read an OpenAI ``usage`` object; missing or null parts count as zero."""
        if not usage:
            return cls()
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(prompt_details.get("cached_tokens") or 0),
            cache_write_tokens=int(prompt_details.get("cache_write_tokens") or 0),
            reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
        )


class UsageStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    CACHE_HIT = "cache_hit"


def event_id(request_id: str, attempt: int, source: str = "worker") -> str:
    """Deterministic, so a re-published event is dropped by JetStream and ClickHouse."""
    return f"{request_id}:{attempt}:{source}"


class UsageEvent(BaseModel):
    """One upstream call (published by the worker that made it) or one request answered
    at the ingress without an upstream call (rejected, served from cache)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    event_id: str
    request_id: str
    attempt: int = 0
    ts: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    key_id: str | None = None
    team_id: str | None = None
    end_user: str | None = None
    model_alias: str
    provider: str
    deployment_id: str | None = None
    upstream_model: str | None = None
    endpoint: str = "chat"
    streamed: bool = False
    status: UsageStatus
    error_type: str | None = None
    http_status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    usage_estimated: bool = False
    cost: Decimal | None = None
    saved_cost: Decimal | None = None
    price_version: str | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    batch_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    # The complexity router's tier for the attempt, the request's score and why.
    route_tier: str | None = None
    route_score: float | None = None
    route_reason: str | None = None
    # Images and audio calls: images made, audio seconds, characters of speech.
    images: int = 0
    audio_seconds: Decimal = Decimal(0)
    characters: int = 0
