"""An Anthropic Messages body as an OpenAI chat body, without any I/O.

What chat can say is translated: system, text, images, PDFs, tools, ``tool_use`` and
``tool_result``, ``tool_choice``, sampling and stop sequences, structured output. What
only Anthropic acts on is left out: ``cache_control`` (prompt caching is the upstream's
own), ``thinking`` (its budget means nothing to another model, and earlier thinking blocks
carry signatures only Anthropic checks), ``top_k``, ``service_tier``. What cannot be said
at all (Anthropic's server tools, files by id) is refused as an invalid request before
anything is sent.
"""

from __future__ import annotations

import json
from typing import Any

from schemas.errors import ErrorInfo, ErrorKind
from workers.providers.base import UpstreamError

_TOOL_CHOICES: dict[str, str] = {"auto": "auto", "any": "required", "none": "none"}
# Block types that carry nothing another provider can use.
_DROPPED = frozenset({"thinking", "redacted_thinking"})


def _invalid(message: str, param: str | None = None) -> UpstreamError:
    return UpstreamError(ErrorInfo.of(ErrorKind.INVALID_REQUEST, message, param=param))


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completion body for a Messages body (``model`` and ``stream`` kept)."""
    messages: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(body.get("messages") or ()):
        if message.get("role") == "assistant":
            messages.append(_assistant(message.get("content"), i))
        else:
            messages += _user(message.get("content"), i)
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("stream"):
        chat["stream"] = True
    if body.get("max_tokens") is not None:
        chat["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = list(body["stop_sequences"])
    tools = body.get("tools")
    if tools:
        chat["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        _tool_choice(chat, choice, bool(tools))
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        chat["user"] = user
    output = (body.get("output_config") or {}).get("format")
    if isinstance(output, dict) and output.get("type") == "json_schema":
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": output.get("schema") or {},
                            "strict": True},
        }
    return chat


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n\n".join(str(b.get("text") or "") for b in system
                           if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source") or {}
    kind = source.get("type")
    if kind == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif kind == "url":
        url = str(source.get("url"))
    else:
        raise _invalid(f"{where}: an image source of type {kind!r} is served only by "
                       "Anthropic deployments", where)
    return {"type": "image_url", "image_url": {"url": url}}


def _document(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source") or {}
    kind = source.get("type")
    if kind == "text":
        return {"type": "text", "text": str(source.get("data") or "")}
    if kind == "content":
        parts = _blocks(source.get("content"))
        return {"type": "text", "text": "\n".join(str(p.get("text") or "") for p in parts)}
    if kind == "base64":
        name = block.get("title") or "document.pdf"
        data = f"data:{source.get('media_type') or 'application/pdf'};base64,{source.get('data')}"
        return {"type": "file", "file": {"filename": name, "file_data": data}}
    raise _invalid(f"{where}: a document source of type {kind!r} is served only by "
                   "Anthropic deployments", where)


def _part(block: dict[str, Any], where: str) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": str(block.get("text") or "")}
    if kind == "image":
        return _image(block, where)
    if kind == "document":
        return _document(block, where)
    if kind in _DROPPED:
        return None
    raise _invalid(f"{where}: a {kind!r} block is served only by Anthropic deployments", where)


def _user(content: Any, i: int) -> list[dict[str, Any]]:
    """A user turn: its tool results first, as chat's tool messages (they must follow the
    assistant's calls at once), then the rest as one user message."""
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content)):
        where = f"messages.{i}.content.{j}"
        if block.get("type") == "tool_result":
            text, images = _tool_result(block, where)
            out.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""),
                        "content": text})
            parts += images  # a tool message carries text only: its images follow
        elif (part := _part(block, where)) is not None:
            parts.append(part)
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _tool_result(block: dict[str, Any], where: str) -> tuple[str, list[dict[str, Any]]]:
    content = block.get("content")
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for k, part in enumerate(_blocks(content)):
        translated = _part(part, f"{where}.content.{k}")
        if translated is None:
            continue
        if translated["type"] == "text":
            texts.append(translated["text"])
        else:
            images.append(translated)
    return "\n".join(texts), images


def _assistant(content: Any, i: int) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content)):
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            calls.append({
                "id": str(block.get("id") or ""),
                "type": "function",
                "function": {"name": str(block.get("name") or ""),
                             "arguments": json.dumps(block.get("input") or {},
                                                     separators=(",", ":"))},
            })
        elif kind not in _DROPPED:
            raise _invalid(f"messages.{i}.content.{j}: a {kind!r} block is served only by "
                           "Anthropic deployments", f"messages.{i}.content.{j}")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _tool(tool: Any, i: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or "input_schema" not in tool or tool.get("type") not in (
            None, "custom"):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise _invalid(f"tools.{i}: the server tool {kind!r} is served only by Anthropic "
                       "deployments", f"tools.{i}")
    function: dict[str, Any] = {"name": tool.get("name"),
                                "parameters": tool.get("input_schema") or {}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(chat: dict[str, Any], choice: dict[str, Any], has_tools: bool) -> None:
    kind = choice.get("type")
    if not has_tools:  # chat refuses a tool_choice without tools; with none, none is used
        return
    if kind == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in _TOOL_CHOICES:
        chat["tool_choice"] = _TOOL_CHOICES[kind]
    if choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False
