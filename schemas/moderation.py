"""The request body of ``POST /v1/moderations`` (OpenAI's). Unknown fields pass through."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_MODERATION_INPUTS = 2048


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    # OpenAI lets it out (its default model); a gateway must know which deployment serves it.
    model: str = Field(min_length=1)
    input: str | list[str] | list[dict[str, Any]]

    @field_validator("input")
    @classmethod
    def _input(cls, value: str | list[Any]) -> str | list[Any]:
        if isinstance(value, list):
            if not value:
                raise ValueError("must not be empty")
            if len(value) > MAX_MODERATION_INPUTS:
                raise ValueError(f"at most {MAX_MODERATION_INPUTS} inputs")
        return value
