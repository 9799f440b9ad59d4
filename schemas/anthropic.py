"""Anthropic Messages request bodies, as far as the gateway must understand them.

Unknown fields are kept (``extra="allow"``): a body bound for an Anthropic deployment goes
upstream as the client wrote it, so new parameters and block types pass through. Only what
the gateway acts on is checked here (routing, limits, budgets, translation).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.estimate import CHARS_PER_TOKEN, TOKENS_PER_IMAGE, TOKENS_PER_MESSAGE

MAX_OUTPUT_TOKENS = 262_144
MAX_TOOLS = 1024
# A PDF costs its text and an image per page; unread, a document counts as four images.
DOCUMENT_IMAGES = 4


class MessageParam(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    user_id: str | None = Field(default=None, max_length=512)


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=0, le=MAX_OUTPUT_TOKENS)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool | None = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: dict[str, Any] | None = None
    metadata: Metadata | None = None
    thinking: dict[str, Any] | None = None


class CountTokensRequest(BaseModel):
    """``/v1/messages/count_tokens``: a Messages body without ``max_tokens``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_TOOLS)


def _block_chars(block: Any) -> tuple[int, int]:
    """Characters of text, and images or documents, in one content block (recursing into
    tool results)."""
    if isinstance(block, str):
        return len(block), 0
    if not isinstance(block, dict):
        return 0, 0
    kind = block.get("type")
    if kind == "text":
        return len(str(block.get("text") or "")), 0
    if kind in ("thinking", "redacted_thinking"):
        return len(str(block.get("thinking") or block.get("data") or "")), 0
    if kind == "tool_use":
        return len(str(block.get("name") or "")) + len(str(block.get("input") or "")), 0
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return len(content), 0
        chars = pictures = 0
        for part in content if isinstance(content, list) else ():
            text, images = _block_chars(part)
            chars, pictures = chars + text, pictures + images
        return chars, pictures
    if kind == "image":
        return 0, 1
    if kind == "document":
        source = block.get("source") or {}
        if isinstance(source, dict) and source.get("type") == "text":
            return len(str(source.get("data") or "")), 0
        return 0, DOCUMENT_IMAGES
    return 0, 0


def _content_chars(content: Any) -> tuple[int, int]:
    if isinstance(content, str):
        return len(content), 0
    chars = pictures = 0
    for block in content if isinstance(content, list) else ():
        text, images = _block_chars(block)
        chars, pictures = chars + text, pictures + images
    return chars, pictures


def input_tokens(body: dict[str, Any]) -> int:
    """An estimate of a Messages body's input tokens, by the gateway's rule of thumb
    (:mod:`schemas.estimate`): system, every block's text, tool inputs and results, tool
    definitions, a flat count per image."""
    chars, images = _content_chars(body.get("system"))
    messages = body.get("messages")
    count = 0
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            count += 1
            text, pictures = _content_chars(message.get("content"))
            chars, images = chars + text, images + pictures
    tools = body.get("tools")
    if isinstance(tools, list):
        chars += sum(len(str(tool)) for tool in tools)
    return -(-chars // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * count + TOKENS_PER_IMAGE * images
