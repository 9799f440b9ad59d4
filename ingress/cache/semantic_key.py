"""What of a chat request the semantic cache compares by meaning, and what must match exactly.

Only the last user turn is embedded and compared. Everything else that can change the
answer (the model alias, whose cache it is, the system prompt and the earlier turns, the
tools, ``temperature``, ``response_format``, ``n``, ``seed``, ``max_tokens``...) goes into
the *scope*: a hash that a hit must share exactly. It is the exact cache's key
(:func:`ingress.cache.key.cache_key`) over the body with the last user turn's content left
out, so every parameter the exact cache tells apart, the semantic cache does too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ingress.cache.key import cache_key
from schemas.cache_config import SemanticSettings

# OpenAI's default temperature when a request names none.
DEFAULT_TEMPERATURE = 1.0
# A last turn longer than this is left to the exact cache: its meaning is not one question.
MAX_PROMPT_CHARS = 8000


@dataclass(frozen=True, slots=True)
class Prompt:
    """A request the semantic cache may serve: its scope and the text to embed."""

    scope: str
    text: str


def last_user_text(body: Mapping[str, Any]) -> str | None:
    """The text of the conversation's last turn when it is the user's and is only text;
    None otherwise (a tool result, an image, an empty turn)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(
                    part.get("text"), str):
                return None
            parts.append(part["text"])
        text = "\n".join(parts)
    else:
        return None
    text = text.strip()
    return text if text and len(text) <= MAX_PROMPT_CHARS else None


def _temperature(body: Mapping[str, Any]) -> float | None:
    value = body.get("temperature")
    if value is None:
        return DEFAULT_TEMPERATURE
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def scope_hash(endpoint: str, model_alias: str, owner: str, embedding_model: str,
               body: Mapping[str, Any]) -> str:
    """The exact part of a request: its body without the last turn's content, the model,
    whose cache it is, and the embedding model (vectors of two models never meet)."""
    messages = list(body["messages"])
    messages[-1] = {k: v for k, v in messages[-1].items() if k != "content"}
    material = {**body, "messages": messages}
    # Half of sha256 is plenty to keep scopes apart, and keeps KV keys short.
    return cache_key(f"semantic:{endpoint}:{embedding_model}", model_alias, owner,
                     material)[:32]


def prompt_of(endpoint: str, model_alias: str, owner: str, settings: SemanticSettings,
              body: Mapping[str, Any]) -> Prompt | None:
    """The request's prompt for the semantic cache, or None when it is not one to serve
    by meaning (not a chat whose last turn is the user's text, or too random)."""
    if endpoint != "chat":
        return None
    text = last_user_text(body)
    if text is None:
        return None
    temperature = _temperature(body)
    if temperature is None or temperature > settings.max_temperature:
        return None
    return Prompt(scope_hash(endpoint, model_alias, owner, settings.embedding_model, body),
                  text)
