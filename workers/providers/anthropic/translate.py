"""OpenAI chat bodies to Anthropic Messages bodies, without any I/O.

Requests: :func:`to_anthropic_request`; the answers and streams coming back are
:mod:`workers.providers.anthropic.answers`. A request Anthropic cannot express raises
:class:`UpstreamError` with kind ``INVALID_REQUEST`` before anything is sent.

Reasoning: ``reasoning_effort`` (or a native ``thinking``) becomes ``thinking`` with a
budget from :mod:`schemas.reasoning`. Thinking comes back as ``reasoning_content`` and, with
its signature, as ``thinking_blocks`` (LiteLLM's field), which a client sends back on the
assistant message of a later turn. ``cache_control`` on content parts, on messages, on
system parts and on tools is passed on as it is.
"""

from __future__ import annotations

import json
from typing import Any

from schemas.errors import ErrorInfo, ErrorKind
from schemas.reasoning import anthropic_thinking, max_tokens_with_thinking
from workers.providers.base import UpstreamError

PROVIDER = "anthropic"

# Anthropic requires max_tokens; OpenAI clients usually leave it out and expect the model's
# own limit. 4096 fits every current Claude model's output limit.
DEFAULT_MAX_TOKENS = 4096

# Anthropic has no JSON mode without a schema, so an OpenAI json_object request becomes an
# instruction. Prose or code fences around the object would break clients that json.loads
# the whole content, hence the explicit wording.
JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose before or after it "
    "and no code fences."
)

_TOOL_CHOICES: dict[str, dict[str, Any]] = {
    "auto": {"type": "auto"},
    "required": {"type": "any"},
    "none": {"type": "none"},
}

_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def _invalid(message: str, param: str | None = None) -> UpstreamError:
    return UpstreamError(
        ErrorInfo.of(ErrorKind.INVALID_REQUEST, message, param=param, provider=PROVIDER)
    )


# --- requests -------------------------------------------------------------------------------


def to_anthropic_request(
    body: dict[str, Any], upstream_model: str, *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat completion body (``stream`` is left out)."""
    n = body.get("n")
    if n is not None and n != 1:
        raise _invalid("anthropic returns one choice per request; n must be 1", "n")
    system, messages = _split_messages(body.get("messages"))
    try:
        thinking = anthropic_thinking(body)
    except ValueError as exc:
        raise _invalid(str(exc), "reasoning_effort") from None
    budget = 0
    if thinking is not None and thinking.get("type") == "enabled":
        given = thinking.get("budget_tokens")
        budget = given if isinstance(given, int) and not isinstance(given, bool) else 0
    request: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": max_tokens_with_thinking(
            body.get("max_completion_tokens") or body.get("max_tokens") or None,
            budget,
            default_max_tokens,
        ),
        "messages": messages,
    }
    if thinking is not None:
        request["thinking"] = thinking
    output_format = _output_format(body.get("response_format"), system)
    if output_format is not None:
        request["output_config"] = {"format": output_format}
    if system:
        request["system"] = _system(system)
    temperature = body.get("temperature")
    if temperature is not None:
        # OpenAI allows 0..2, Anthropic 0..1. Clamping keeps the common 0..1 values exact
        # where rescaling would change every request's meaning.
        request["temperature"] = min(max(float(temperature), 0.0), 1.0)
    if body.get("top_p") is not None:
        request["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    user = body.get("safety_identifier") or body.get("user")
    if user:
        request["metadata"] = {"user_id": str(user)}
    tools = body.get("tools")
    if tools:
        request["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            request["tool_choice"] = choice
    return request


def _system(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One string, unless a block carries ``cache_control``: then the blocks as they are."""
    if any("cache_control" in block for block in blocks):
        return blocks
    return "\n\n".join(str(block["text"]) for block in blocks)


def _mark_cached(blocks: list[dict[str, Any]], message: dict[str, Any]) -> None:
    """A message-level ``cache_control`` (LiteLLM's shorthand) marks its last block."""
    control = message.get("cache_control")
    if control is not None and blocks:
        blocks[-1]["cache_control"] = control


def _split_messages(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System text blocks, and the turns with same-role neighbours merged (Anthropic
    requires user and assistant to alternate)."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty list", "messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(f"messages[{i}] must be an object", "messages")
        role = message.get("role")
        if role in ("system", "developer"):
            parts = _system_blocks(message.get("content"), i)
            _mark_cached(parts, message)
            system.extend(parts)
            continue
        if role == "user":
            turn_role, blocks = "user", _user_blocks(message.get("content"), i)
        elif role == "assistant":
            turn_role, blocks = "assistant", _assistant_blocks(message, i)
        elif role == "tool":
            turn_role, blocks = "user", [_tool_result(message, i)]
        else:
            raise _invalid(f"messages[{i}]: role {role!r} is not supported", "messages")
        # Anthropic rejects empty text blocks and empty turns, and an empty message carries
        # nothing the model could use.
        if not blocks:
            continue
        _mark_cached(blocks, message)
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    return system, turns


def _system_blocks(content: Any, i: int) -> list[dict[str, Any]]:
    """One text block per system message, or one per part where a part asks to be cached."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _invalid(f"messages[{i}].content must be a string or a list of parts", "messages")
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            raise _invalid(f"messages[{i}]: only text parts are allowed here", "messages")
    if any("cache_control" in part for part in content):
        return [b for part in content for b in _text_block(str(part.get("text", "")), part)]
    return [{"type": "text", "text": "\n".join(str(part.get("text", "")) for part in content)}]


def _text_block(text: str, part: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    if not text:
        return []
    block: dict[str, Any] = {"type": "text", "text": text}
    if part is not None and part.get("cache_control") is not None:
        block["cache_control"] = part["cache_control"]
    return [block]


def _user_blocks(content: Any, i: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return _text_block(content)
    if not isinstance(content, list):
        raise _invalid(f"messages[{i}].content must be a string or a list of parts", "messages")
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks += _text_block(str(part.get("text", "")), part)
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            block = _image_block(url, i)
            if part.get("cache_control") is not None:
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
        else:
            raise _invalid(
                f"messages[{i}]: content part {kind!r} is not supported by anthropic", "messages"
            )
    return blocks


def _image_block(url: Any, i: int) -> dict[str, Any]:
    if not isinstance(url, str):
        raise _invalid(f"messages[{i}]: image_url.url must be a string", "messages")
    if url.startswith("data:"):
        header, comma, data = url[len("data:") :].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding != "base64" or not media_type:
            raise _invalid(
                f"messages[{i}]: image data URLs must look like data:<type>;base64,<data>",
                "messages",
            )
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _invalid(f"messages[{i}]: image_url.url must be an http(s) or data URL", "messages")


def _thinking_block(block: Any, i: int) -> dict[str, Any]:
    """A thinking block a client sends back, checked: Anthropic verifies the signature, and
    a block without one would be refused with a less clear message."""
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "thinking":
        thinking, signature = block.get("thinking"), block.get("signature")
        if isinstance(thinking, str) and isinstance(signature, str) and signature:
            return {"type": "thinking", "thinking": thinking, "signature": signature}
        raise _invalid(
            f"messages[{i}]: a thinking block needs its thinking text and signature", "messages"
        )
    if kind == "redacted_thinking" and isinstance(block.get("data"), str):
        return {"type": "redacted_thinking", "data": block["data"]}
    raise _invalid(
        f"messages[{i}]: thinking_blocks holds thinking or redacted_thinking blocks", "messages"
    )


def _assistant_blocks(message: dict[str, Any], i: int) -> list[dict[str, Any]]:
    content = message.get("content")
    # Anthropic wants an assistant turn's thinking first, before its text and tool calls.
    thinking = message.get("thinking_blocks")
    if thinking is not None and not isinstance(thinking, list):
        raise _invalid(f"messages[{i}].thinking_blocks must be a list", "messages")
    thoughts: list[dict[str, Any]] = [_thinking_block(b, i) for b in thinking or []]
    blocks: list[dict[str, Any]] = []
    if isinstance(content, str):
        blocks += _text_block(content)
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") in ("thinking", "redacted_thinking"):
                thoughts.append(_thinking_block(part, i))
                continue
            # A refusal in the history is still something the assistant said.
            blocks += _text_block(str(part.get("text") or part.get("refusal") or ""), part)
    blocks = thoughts + blocks
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _invalid(
                f"messages[{i}]: tool call {call.get('id')!r} arguments must be a JSON object",
                "messages",
            )
        name = function.get("name")
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": name, "input": parsed})
    return blocks


def _tool_result(message: dict[str, Any], i: int) -> dict[str, Any]:
    tool_call_id = message.get("tool_call_id")
    if not tool_call_id:
        raise _invalid(f"messages[{i}]: tool messages need tool_call_id", "messages")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_call_id}
    content = message.get("content")
    if isinstance(content, list):
        block["content"] = [b for part in content for b in _user_blocks([part], i)]
    elif content:
        block["content"] = str(content)
    return block


def _tool(tool: Any, i: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise _invalid(f"tools[{i}]: only function tools are supported by anthropic", "tools")
    function = tool.get("function") or {}
    if not function.get("name"):
        raise _invalid(f"tools[{i}]: function.name is required", "tools")
    result: dict[str, Any] = {
        "name": function["name"],
        "input_schema": function.get("parameters") or _EMPTY_SCHEMA,
    }
    if function.get("description"):
        result["description"] = function["description"]
    if function.get("strict") is True:
        result["strict"] = True
    # LiteLLM puts cache_control beside "function"; accept it inside too.
    control = tool.get("cache_control") or function.get("cache_control")
    if control is not None:
        result["cache_control"] = control
    return result


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif isinstance(choice, str) and choice in _TOOL_CHOICES:
        result = dict(_TOOL_CHOICES[choice])
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise _invalid("tool_choice.function.name is required", "tool_choice")
        result = {"type": "tool", "name": name}
    else:
        raise _invalid(f"tool_choice {choice!r} is not supported by anthropic", "tool_choice")
    # Anthropic only accepts the flag on choices that can call tools.
    if parallel is False and (result is None or result["type"] != "none"):
        result = {**(result or {"type": "auto"}), "disable_parallel_tool_use": True}
    return result


def _output_format(
    response_format: Any, system: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The ``output_config.format`` for a response_format; json_object appends to system."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        system.append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})
        return None
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise _invalid("response_format.json_schema.schema is required", "response_format")
        return {"type": "json_schema", "schema": schema}
    raise _invalid(f"response_format {kind!r} is not supported by anthropic", "response_format")
