"""What the reasoning and caching translation tests send: user messages and the ephemeral
cache_control marker."""

from __future__ import annotations

from typing import Any

EPHEMERAL = {"type": "ephemeral"}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}
