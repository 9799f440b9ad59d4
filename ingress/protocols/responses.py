"""OpenAI Responses to chat completions and back, for a non-streamed answer.

A Responses request becomes one chat request: input items become messages, function tools
chat tools, ``text.format`` a ``response_format``, ``reasoning.effort`` a
``reasoning_effort``. The chat answer becomes a ``response`` object whose output holds a
reasoning item (when the answer has ``reasoning_content``), a message with ``output_text``
and one ``function_call`` item per tool call. What has no chat equivalent (hosted tools,
background mode, server-side conversations, file ids) is refused with :class:`Unsupported`
rather than silently dropped.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

# Chat request fields a Responses request carries under the same name and meaning.
# ``metadata`` is not one: it describes the stored response (OpenAI's chat refuses it
# without ``store``); the gateway's usage event still carries it.
_SAME_FIELDS = ("temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier",
                "prompt_cache_key", "service_tier")
_REFUSED_FIELDS = {
    "background": "background mode is not supported by this gateway",
    "conversation": "conversations are not supported by this gateway; use "
                    "previous_response_id",
    "prompt": "stored prompts are not supported by this gateway",
}
_TOOL_CHOICES = ("auto", "none", "required")
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


class Unsupported(ValueError):
    """A request the gateway cannot translate: a 400 naming ``param``."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# --- the request ---------------------------------------------------------------------


def input_items(value: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items, each with an id (as stored and listed
    by ``input_items``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "id": new_id("msg"), "role": "user",
                 "content": [{"type": "input_text", "text": value}]}]
    items: list[dict[str, Any]] = []
    for item in value:
        kind = item.get("type") or ("message" if "role" in item else None)
        prefix = {"message": "msg", "function_call": "fc", "function_call_output": "fco",
                  "reasoning": "rs"}.get(str(kind), "item")
        items.append({"type": kind, "id": new_id(prefix), **{
            k: v for k, v in item.items() if k != "type"}})
    return items


def _text_of(parts: Any, param: str) -> str:
    """The text of a message's content (a string or text parts)."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise Unsupported("content must be a string or a list of content parts", param)
    texts: list[str] = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            texts.append(str(part.get("text") or ""))
        elif kind == "refusal":
            texts.append(str(part.get("refusal") or ""))
        else:
            raise Unsupported(f"a content part of type {kind!r} is not supported here",
                              f"{param}[{j}].type")
    return "".join(texts)


def _part(part: Any, param: str) -> dict[str, Any]:
    """One content part of a user (or system) message, in chat's shape."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise Unsupported("text must be a string", f"{param}.text")
        return {"type": "text", "text": text}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise Unsupported("input_image needs an image_url (a URL or a data URL); "
                              "file_id is not supported by this gateway", f"{param}.image_url")
        image: dict[str, Any] = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        data = part.get("file_data")
        if not isinstance(data, str) or not data:
            raise Unsupported("input_file needs file_data (a data URL); file_id and file_url "
                              "are not supported by this gateway", f"{param}.file_data")
        file: dict[str, Any] = {"file_data": data}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    raise Unsupported(f"a content part of type {kind!r} is not supported", f"{param}.type")


def _content(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise Unsupported("content must be a string or a non-empty list of content parts",
                          param)
    parts = [_part(part, f"{param}[{j}]") for j, part in enumerate(content)]
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _string(item: dict[str, Any], field: str, param: str) -> str:
    value = item.get(field)
    if not isinstance(value, str):
        raise Unsupported(f"{field} must be a string", f"{param}.{field}")
    return value


def to_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as chat messages. A function call joins the assistant message just
    before it (chat carries a turn's text and tool calls in one message)."""
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        param = f"input[{i}]"
        kind = item.get("type")
        if kind == "message":
            role = item.get("role")
            if role == "assistant":
                messages.append({"role": "assistant",
                                 "content": _text_of(item.get("content"), f"{param}.content")})
            elif role in ("user", "system", "developer"):
                messages.append({"role": "system" if role == "developer" else role,
                                 "content": _content(item.get("content"), f"{param}.content")})
            else:
                raise Unsupported(f"role {role!r} is not one of user, assistant, system, "
                                  "developer", f"{param}.role")
        elif kind == "function_call":
            call = {"id": _string(item, "call_id", param), "type": "function",
                    "function": {"name": _string(item, "name", param),
                                 "arguments": _string(item, "arguments", param)}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text_of(output, f"{param}.output")
            messages.append({"role": "tool", "tool_call_id": _string(item, "call_id", param),
                             "content": text})
        elif kind == "reasoning":
            continue  # the model's own earlier thinking: chat has no place for it
        else:
            raise Unsupported(f"input items of type {kind!r} are not supported by this "
                              "gateway", f"{param}.type")
    return messages


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise Unsupported(f"only function tools are supported, not {tool.get('type')!r}",
                              f"tools[{i}].type")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise Unsupported("a function tool needs a name", f"tools[{i}].name")
        function: dict[str, Any] = {"name": name}
        for field in ("description", "parameters", "strict"):
            if tool.get(field) is not None:
                function[field] = tool[field]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise Unsupported(f"tool_choice must be one of {', '.join(_TOOL_CHOICES)} or a "
                              "function", "tool_choice")
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise Unsupported("tool_choice may name a function tool only", "tool_choice")


def _response_format(fmt: Any) -> dict[str, Any] | None:
    if not isinstance(fmt, dict):
        raise Unsupported("text.format must be an object", "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not isinstance(schema, dict):
            raise Unsupported("a json_schema format needs a name and a schema", "text.format")
        spec: dict[str, Any] = {"name": name, "schema": schema}
        for field in ("strict", "description"):
            if fmt.get(field) is not None:
                spec[field] = fmt[field]
        return {"type": "json_schema", "json_schema": spec}
    raise Unsupported(f"text.format.type {kind!r} is not one of text, json_object, "
                      "json_schema", "text.format.type")


def to_chat(body: dict[str, Any], model: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat request for a Responses request ``body`` whose whole conversation (earlier
    turns, then this request's input) is ``items``."""
    for field, why in _REFUSED_FIELDS.items():
        if body.get(field):
            raise Unsupported(why, field)
    messages = to_messages(items)
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    if not messages:
        raise Unsupported("input is required (or previous_response_id)", "input")
    chat: dict[str, Any] = {"model": model, "messages": messages}
    for field in _SAME_FIELDS:
        if body.get(field) is not None:
            chat[field] = body[field]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    text = body.get("text")
    if isinstance(text, dict):
        if "format" in text and (fmt := _response_format(text["format"])) is not None:
            chat["response_format"] = fmt
        if isinstance(text.get("verbosity"), str):
            chat["verbosity"] = text["verbosity"]
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


# --- the answer ----------------------------------------------------------------------


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def shell(response_id: str, body: dict[str, Any], model: str) -> dict[str, Any]:
    """The response object before any output: what the request asked for, echoed."""
    reasoning = _object(body.get("reasoning"))
    text = _object(body.get("text"))
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": body.get("store", True) is not False,
        "temperature": body.get("temperature", 1.0),
        "text": {**text, "format": text.get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def usage(chat_usage: dict[str, Any] | None) -> dict[str, Any]:
    """A chat ``usage`` object in Responses' terms (the gateway's ``cost`` kept)."""
    found = chat_usage or {}
    prompt_details = found.get("prompt_tokens_details") or {}
    completion_details = found.get("completion_tokens_details") or {}
    input_tokens = int(found.get("prompt_tokens") or 0)
    output_tokens = int(found.get("completion_tokens") or 0)
    out: dict[str, Any] = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": int(prompt_details.get("cached_tokens") or 0)},
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0)},
        "total_tokens": input_tokens + output_tokens,
    }
    if found.get("cost") is not None:
        out["cost"] = found["cost"]
    return out


def reasoning_text(message: dict[str, Any]) -> str:
    """The thinking text of a chat message or delta (``reasoning_content``, or
    ``reasoning`` as some OpenAI-compatible servers name it)."""
    for field in ("reasoning_content", "reasoning"):
        value = message.get(field)
        if isinstance(value, str) and value:
            return value
    return ""


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}]}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": content}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str,
                       status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def output_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat answer's message as Responses output items."""
    items: list[dict[str, Any]] = []
    if thought := reasoning_text(message):
        items.append(reasoning_item(new_id("rs"), thought))
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append(output_text(text))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        content.append({"type": "refusal", "refusal": message["refusal"]})
    if content:
        items.append(message_item(new_id("msg"), content, "completed"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        items.append(function_call_item(
            new_id("fc"), str(call.get("id") or new_id("call")), str(function.get("name") or ""),
            str(function.get("arguments") or ""), "completed"))
    return items


def finished(response: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    """``response`` with its final status, from the chat answer's finish reason."""
    reason = _INCOMPLETE.get(finish_reason or "")
    if reason is None:
        return {**response, "status": "completed"}
    return {**response, "status": "incomplete", "incomplete_details": {"reason": reason}}


def from_chat(base: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    """The response for a whole chat answer; ``base`` is the request's :func:`shell`."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    response = {**base, "output": output_items(message if isinstance(message, dict) else {}),
                "usage": usage(completion.get("usage"))}
    if isinstance(completion.get("model"), str):
        response["model"] = completion["model"]
    return finished(response, choice.get("finish_reason") if isinstance(choice, dict) else None)
