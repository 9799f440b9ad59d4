"""A recorded Claude Code session replayed through ``/v1/messages``, turn by turn as Claude
Code builds each from the answers before it: against an Anthropic deployment (the events
and what reaches the upstream exactly as recorded, thinking signed, cache_control in place)
and against an OpenAI-compatible one (translated both ways).
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.e2e.conftest import MASTER_KEY
from tests.e2e.messages_gateway import (
    _sse,
    messages_gateway,  # noqa: F401 - the module's gateway
)
from tests.fakes.anthropic_server import signature_of
from tests.fakes.openai_server import TOOL_ARGS, FakeOpenAIState
from tests.harness import Gateway

pytestmark = pytest.mark.e2e
RECORDING = Path(__file__).parent / "recordings" / "claude_code_session.json"


def _accumulate(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The content blocks a client builds from a stream's events."""
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for _, data in events:
        if data["type"] == "content_block_start":
            blocks[data["index"]] = dict(data["content_block"])
        elif data["type"] == "content_block_delta":
            block, delta = blocks[data["index"]], data["delta"]
            kind = delta["type"]
            if kind == "text_delta":
                block["text"] += delta["text"]
            elif kind == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif kind == "signature_delta":
                block["signature"] = delta["signature"]
            elif kind == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
        elif data["type"] == "content_block_stop" and data["index"] in partial:
            blocks[data["index"]]["input"] = json.loads(partial[data["index"]])
    return [blocks[i] for i in sorted(blocks)]


def _shape(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, Any, Any]]:
    """Each event as (type, block index, block or delta type), runs of one delta kind
    collapsed to one entry."""
    shape = [(data["type"], data.get("index"),
              (data.get("content_block") or data.get("delta") or {}).get("type"))
             for _, data in events]
    return [key for key, _ in itertools.groupby(shape)]


def _replay(gateway: Gateway, model: str | None = None) -> list[Any]:
    """Send the recorded requests in order (to ``model`` instead of the recorded ones when
    given), each turn built from the answers before it as Claude Code builds it; the
    answers: a JSON body, or a stream's (event, data) pairs."""
    session = json.loads(RECORDING.read_text())
    headers = {**session["headers"], "x-api-key": MASTER_KEY}
    answers: list[Any] = []
    for request in session["requests"]:
        body = copy.deepcopy(request["body"])
        body["model"] = model or body["model"]
        if request["name"] == "turn-2":
            content = _accumulate(answers[-1])
            body["messages"][1]["content"] = content
            body["messages"][2]["content"][0]["tool_use_id"] = content[-1]["id"]
        if not body.get("stream"):
            r = httpx.post(gateway.base_url + session["path"], json=body, headers=headers)
            assert r.status_code == 200, r.text
            answers.append(r.json())
            continue
        with httpx.stream("POST", gateway.base_url + session["path"], json=body,
                          headers=headers, timeout=30) as r:
            assert r.status_code == 200, r.read()
            events = _sse(r.iter_lines())
        assert all(name == data["type"] for name, data in events)
        answers.append(events)
    return answers


def test_claude_code_session_replayed_against_an_anthropic_deployment(
    gateway: Gateway, fake_anthropic: tuple[str, Starlette],
    fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    app = fake_anthropic[1]
    before = len(app.state.requests)
    quota, turn1, turn2 = _replay(gateway)

    # The small model's probe went to the OpenAI-compatible deployment, translated.
    assert quota["type"] == "message" and quota["role"] == "assistant"
    assert fake_openai[1].requests[-1]["max_tokens"] == 1
    assert fake_openai[1].requests[-1]["user"].startswith("user_")

    assert _shape(turn1) == [
        ("message_start", None, None), ("ping", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("message_delta", None, None), ("message_stop", None, None)]
    recorded = json.loads(RECORDING.read_text())
    # The fake thinks about, and calls its tool with, the turn's user text.
    asked = " ".join(b["text"] for b in recorded["requests"][1]["body"]["messages"][0]["content"])
    thinking, text, tool_use = _accumulate(turn1)
    assert thinking["thinking"] == f"Thinking about: {asked}"
    assert thinking["signature"] == signature_of(thinking["thinking"])
    assert text == {"type": "text", "text": "Let me check."}
    assert tool_use["name"] == "Bash"
    assert tool_use["input"] == {"query": asked}
    assert turn1[-2][1]["delta"]["stop_reason"] == "tool_use"

    assert _shape(turn2) == [
        ("message_start", None, None), ("ping", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("message_delta", None, None), ("message_stop", None, None)]
    assert _accumulate(turn2)[1]["text"] == (
        "The tool returned: app.py\ncli.py\ntests/test_app.py")
    assert turn2[-2][1]["delta"]["stop_reason"] == "end_turn"

    # Upstream saw exactly what Claude Code sent: thinking signed, cache_control in place,
    # Claude Code's betas along.
    sent = app.state.requests[before:]
    assert len(sent) == 2
    assert sent[0]["system"] == recorded["requests"][1]["body"]["system"]
    assert sent[1]["messages"][1]["content"][0] == thinking
    assert sent[1]["messages"][2]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert app.state.last_headers["anthropic-beta"] == recorded["headers"]["anthropic-beta"]


def test_claude_code_session_replayed_against_an_openai_compatible_deployment(
    gateway: Gateway, fake_openai: tuple[str, FakeOpenAIState],
) -> None:
    quota, turn1, turn2 = _replay(gateway, model="gpt")
    assert quota["content"][0]["type"] == "text"
    for turn in (turn1, turn2):  # the fake calls the first tool whenever it has tools
        assert _shape(turn) == [
            ("message_start", None, None),
            ("content_block_start", 0, "tool_use"),
            ("content_block_delta", 0, "input_json_delta"),
            ("content_block_stop", 0, None),
            ("message_delta", None, None), ("message_stop", None, None)]
        [call] = _accumulate(turn)
        assert call["name"] == "Bash" and call["input"] == json.loads(TOOL_ARGS)
        assert turn[-2][1]["delta"]["stop_reason"] == "tool_use"
    sent = fake_openai[1].requests[-1]
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][0]["content"].startswith("You are Claude Code")
    assert [m["role"] for m in sent["messages"][1:]] == ["user", "assistant", "tool"]
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": "call_fake1",
                                   "content": "app.py\ncli.py\ntests/test_app.py"}
    assert [t["function"]["name"] for t in sent["tools"]] == ["Bash", "Glob", "Read"]
