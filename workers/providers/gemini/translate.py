"""OpenAI chat requests to Gemini's ``generateContent`` body. Pure: no I/O.

Gemini differs from OpenAI in ways that need memory rather than renaming: it has one
system instruction instead of system messages, it names a function's result after the
function instead of after the call, and it wants strictly alternating roles. Answers and
streams come back through :mod:`workers.providers.gemini.answers`.

Reasoning: ``reasoning_effort``, a native ``thinkingConfig`` or an Anthropic-style
``thinking`` become ``generationConfig.thinkingConfig`` (:mod:`schemas.reasoning`).
"""

from __future__ import annotations

import base64
import json
import mimetypes
import urllib.parse
from typing import Any

from schemas.errors import ErrorInfo, ErrorKind
from schemas.reasoning import gemini_thinking_config
from workers.providers.base import UpstreamError

PROVIDER = "gemini"

_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}

# OpenAI parameter -> generationConfig field, for the ones that only change their name.
_GENERATION_FIELDS = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("n", "candidateCount"),
    ("seed", "seed"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
)


def invalid_request(message: str, param: str | None = None) -> UpstreamError:
    """A request Gemini cannot be asked, refused before any I/O."""
    return UpstreamError(
        ErrorInfo.of(ErrorKind.INVALID_REQUEST, message, param=param, provider=PROVIDER)
    )


def to_gemini_request(body: dict[str, Any]) -> dict[str, Any]:
    """The ``generateContent`` body for an OpenAI chat request body."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_content_parts(message.get("content")))
        elif role == "user":
            _append(contents, "user", _content_parts(message.get("content")))
        elif role == "assistant":
            parts = _content_parts(message.get("content"))
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                call_names[str(call.get("id"))] = str(function.get("name"))
                parts.append(_function_call_part(call))
            _append(contents, "model", parts)
        elif role in ("tool", "function"):
            name = call_names.get(str(message.get("tool_call_id"))) or message.get("name")
            if not name:
                raise invalid_request(
                    f"tool message refers to unknown tool_call_id {message.get('tool_call_id')!r}",
                    "messages",
                )
            _append(contents, "user", [_function_response_part(name, message.get("content"))])
        else:
            raise invalid_request(f"unsupported message role {role!r}", "messages")

    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    declarations = _function_declarations(body.get("tools"))
    if declarations:
        request["tools"] = [{"functionDeclarations": declarations}]
        tool_config = _tool_config(body.get("tool_choice"))
        if tool_config:
            request["toolConfig"] = tool_config
    generation = _generation_config(body)
    if generation:
        request["generationConfig"] = generation
    return request


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    # Gemini rejects empty parts and wants turns to alternate, so an empty message is
    # dropped and a run of same-role messages (e.g. several tool results) becomes one turn.
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": list(parts)})


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise invalid_request("message content must be a string or a list of parts", "messages")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get(kind) or ""
            if text:
                parts.append({"text": text})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(_media_part(str(url or ""), "image/*"))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            mime = f"audio/{audio.get('format') or 'wav'}"
            parts.append({"inlineData": {"mimeType": mime, "data": audio.get("data") or ""}})
        elif kind == "file" and (part.get("file") or {}).get("file_data"):
            parts.append(_media_part(str(part["file"]["file_data"]), "application/octet-stream"))
        else:
            raise invalid_request(
                f"content part type {kind!r} is not supported by gemini", "messages"
            )
    return parts


def _media_part(url: str, fallback_mime: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, payload = url[len("data:") :].partition(",")
        mime = header.split(";")[0] or fallback_mime
        if ";base64" not in header:
            payload = base64.b64encode(urllib.parse.unquote_to_bytes(payload)).decode()
        return {"inlineData": {"mimeType": mime, "data": payload}}
    guessed, _ = mimetypes.guess_type(urllib.parse.urlsplit(url).path)
    return {"fileData": {"fileUri": url, "mimeType": guessed or fallback_mime}}


def _function_call_part(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    raw = function.get("arguments") or "{}"
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        args = None
    if not isinstance(args, dict):
        # Gemini only takes an object; keep what the model said rather than lose it.
        args = {"arguments": raw}
    part: dict[str, Any] = {"functionCall": {"name": function.get("name"), "args": args}}
    # Thinking models refuse a function-calling history without the signature they
    # issued, so it travels through the client inside the tool call and comes back here.
    signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
    if signature:
        part["thoughtSignature"] = signature
    return part


def _function_response_part(name: str, content: Any) -> dict[str, Any]:
    if isinstance(content, list):
        text = "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    else:
        text = "" if content is None else str(content)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _function_declarations(tools: Any) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    for tool in tools or []:
        if tool.get("type", "function") != "function":
            raise invalid_request(
                f"tool type {tool.get('type')!r} is not supported by gemini", "tools"
            )
        function = tool.get("function") or {}
        if not function.get("name"):
            raise invalid_request("every function tool needs a name", "tools")
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters") is not None:
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return declarations


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in _MODES:
            raise invalid_request(f"unsupported tool_choice {choice!r}", "tool_choice")
        return {"functionCallingConfig": {"mode": _MODES[choice]}}
    name = ((choice.get("function") or {}) if isinstance(choice, dict) else {}).get("name")
    if not name:
        raise invalid_request(
            "tool_choice must be auto, required, none or a named function", "tool_choice"
        )
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config = {dst: body[src] for src, dst in _GENERATION_FIELDS if body.get(src) is not None}
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = body.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is not None:
            config["responseJsonSchema"] = schema
    try:
        thinking = gemini_thinking_config(body)
    except ValueError as exc:
        raise invalid_request(str(exc), "reasoning_effort") from None
    if thinking is not None:
        config["thinkingConfig"] = thinking
    return config
