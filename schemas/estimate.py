"""Token counts for a call whose provider never said what it used.

OpenAI-style providers report usage only in the last chunk, so a stream cut off by the
network, the upstream or the client leaves the call with no figures, although the
provider bills the prompt and every token it sent. A call whose worker died leaves no
figures either, and the ingress accounts it from the request and the chunks it relayed
(:mod:`ingress.dispatch.lost`). An account of zero would be wrong for certain; an estimate is
closer, and is marked as one; worker and ingress estimate by the same rules. The rule of
thumb is the one OpenAI documents for English text: about four characters per token. The
estimate never lowers a count the provider did report (Anthropic reports input tokens at
the start).
"""

from __future__ import annotations

import re
from typing import Any

from schemas.usage import TokenUsage

CHARS_PER_TOKEN = 4
# Role markers and separators OpenAI's chat format adds around every message.
TOKENS_PER_MESSAGE = 4
# What a vision model charges for one low-detail image; the least an image can cost.
TOKENS_PER_IMAGE = 85


def _tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def _content_chars(content: Any) -> tuple[int, int]:
    """Characters of text and the number of images in one message's content."""
    if isinstance(content, str):
        return len(content), 0
    chars = images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                chars += len(part["text"])
            elif part.get("type") in ("image_url", "input_image"):
                images += 1
    return chars, images


def prompt_tokens(body: dict[str, Any]) -> int:
    """An estimate of the input tokens of an OpenAI chat request body."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        # A legacy text completion's ``prompt`` is read as an embedding's ``input`` is.
        return embedding_tokens({"input": body.get("prompt")})
    chars = images = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        text, pictures = _content_chars(message.get("content"))
        chars += text
        images += pictures
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict):
                chars += len(str((call.get("function") or {}).get("arguments") or ""))
    tools = body.get("tools")
    if isinstance(tools, list):
        chars += sum(len(str(tool)) for tool in tools)
    return _tokens(chars) + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_IMAGE * images


def embedding_tokens(body: dict[str, Any]) -> int:
    """An estimate of the input tokens of an OpenAI embeddings request body. ``input`` is
    a string, a list of strings (each tokenized on its own), or tokens already: a list of
    token ids or a list of such lists, whose length is the count."""
    value = body.get("input")
    if isinstance(value, str):
        return _tokens(len(value))
    if not isinstance(value, list):
        return 0
    tokens = 0
    for item in value:
        if isinstance(item, str):
            tokens += _tokens(len(item))
        elif isinstance(item, list):
            tokens += len(item)
        elif isinstance(item, int):
            tokens += 1
    return tokens


def chunk_chars(chunk: dict[str, Any]) -> int:
    """Characters of generated output in one OpenAI ``chat.completion.chunk``."""
    chars = 0
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict) and isinstance(choice.get("text"), str):
            chars += len(choice["text"])  # a legacy text completion's chunk
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        for field in ("content", "reasoning_content", "refusal"):
            value = delta.get(field)
            if isinstance(value, str):
                chars += len(value)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                function = call.get("function") or {}
                chars += len(str(function.get("name") or ""))
                chars += len(str(function.get("arguments") or ""))
    return chars


# The string values of the fields :func:`chunk_chars` reads, found in a chunk's JSON
# without parsing it. In JSON text a quote inside a string is always escaped, so a key
# never matches inside another field's value.
# (thinking and partial_json: Anthropic's stream events, /v1/messages)
_OUTPUT_FIELD = re.compile(
    rb'"(?:content|reasoning_content|refusal|name|arguments|text|thinking|partial_json)"'
    rb'\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"')
_ESCAPE = re.compile(rb"\\u[0-9a-fA-F]{4}|\\.")


def raw_chunk_chars(chunk: bytes) -> int:
    """:func:`chunk_chars` of a chunk's JSON text, read without parsing it: the ingress
    counts every chunk it relays, and ``json.loads`` alone costs nearly three times as
    much. An escape counts as the one character it stands for, as parsing would count
    it; a surrogate pair (``\\ud83d\\ude00``) counts two where parsing counts one."""
    chars = 0
    for value in _OUTPUT_FIELD.findall(chunk):
        count = len(value) if value.isascii() else len(value.decode("utf-8", "replace"))
        if b"\\" in value:
            count -= sum(len(escape) - 1 for escape in _ESCAPE.findall(value))
        chars += count
    return chars


def cut_stream(
    reported: TokenUsage | None, body: dict[str, Any], output_chars: int, text_chunks: int
) -> TokenUsage:
    """The usage to account for a stream that ended without its final usage: what the
    provider reported so far, with the estimate filling what it did not. A chunk of text
    is most often one token, so the output is at least one token per chunk received."""
    reported = reported or TokenUsage()
    return reported.model_copy(update={
        "prompt_tokens": reported.prompt_tokens or prompt_tokens(body),
        "completion_tokens": max(reported.completion_tokens, _tokens(output_chars), text_chunks),
        "estimated": True,
    })
