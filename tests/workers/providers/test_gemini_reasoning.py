"""reasoning_effort, thinking and cache_control through the Gemini translator: into a
thinkingConfig, and thoughts and cached tokens back, streamed and not."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.usage import TokenUsage
from tests.workers.providers.reasoning_messages import EPHEMERAL, user
from workers.providers.base import UpstreamError
from workers.providers.gemini.answers import (
    StreamTranslator as GeminiStreamTranslator,
)
from workers.providers.gemini.answers import from_gemini_response, usage_from_gemini
from workers.providers.gemini.translate import to_gemini_request


def gemini(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [user("hi")])
    return to_gemini_request(body)


@pytest.mark.parametrize(("effort", "config"), [
    ("none", {"thinkingBudget": 0}),
    ("minimal", {"thinkingBudget": 512, "includeThoughts": True}),
    ("low", {"thinkingBudget": 2048, "includeThoughts": True}),
    ("medium", {"thinkingBudget": 8192, "includeThoughts": True}),
    ("high", {"thinkingBudget": 24576, "includeThoughts": True}),
    ("xhigh", {"thinkingBudget": -1, "includeThoughts": True}),
])
def test_reasoning_effort_becomes_a_gemini_thinking_config(
    effort: str, config: dict[str, Any]
) -> None:
    assert gemini(reasoning_effort=effort)["generationConfig"]["thinkingConfig"] == config


def test_a_native_thinking_config_passes_through() -> None:
    native = {"thinkingBudget": -1, "includeThoughts": False}
    request = gemini(thinkingConfig=native, reasoning_effort="high")
    assert request["generationConfig"]["thinkingConfig"] == native


def test_an_anthropic_style_thinking_maps_to_a_gemini_budget() -> None:
    request = gemini(thinking={"type": "enabled", "budget_tokens": 1500})
    assert request["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 1500, "includeThoughts": True}


def test_an_unknown_effort_is_refused_by_the_gemini_translator() -> None:
    with pytest.raises(UpstreamError) as caught:
        gemini(reasoning_effort="max")
    assert caught.value.info.param == "reasoning_effort"


def test_no_effort_sends_no_thinking_config() -> None:
    assert "generationConfig" not in gemini()


def test_gemini_cache_control_parts_are_read_as_plain_parts() -> None:
    content = [{"type": "text", "text": "doc", "cache_control": EPHEMERAL}]
    request = gemini(messages=[{"role": "user", "content": content}])
    assert request["contents"] == [{"role": "user", "parts": [{"text": "doc"}]}]


def test_gemini_thoughts_and_cached_tokens_come_back() -> None:
    response = from_gemini_response({
        "responseId": "r",
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Pondering. ", "thought": True}, {"text": "More.", "thought": True},
            {"text": "Done."}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 60,
                          "candidatesTokenCount": 2, "thoughtsTokenCount": 9},
    }, "gemini-2.5-flash")
    message = response["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("Done.", "Pondering. More.")
    assert response["usage"]["completion_tokens"] == 11
    assert response["usage"]["completion_tokens_details"] == {"reasoning_tokens": 9}
    assert response["usage"]["prompt_tokens_details"] == {"cached_tokens": 60}
    assert usage_from_gemini({"cachedContentTokenCount": 3}).cached_tokens == 3


def test_gemini_streamed_thoughts_arrive_as_reasoning_deltas() -> None:
    translator = GeminiStreamTranslator("gemini-2.5-flash", created=1)
    chunks: list[dict[str, Any]] = [
        {"responseId": "r", "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Hmm.", "thought": True}]}}]},
        {"responseId": "r", "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Yes."}]}, "finishReason": "STOP"}],
         "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1,
                           "thoughtsTokenCount": 3, "cachedContentTokenCount": 2}},
    ]
    deltas = [c["choices"][0]["delta"] for chunk in chunks for c in translator.feed(chunk)]
    assert deltas == [{"role": "assistant", "content": ""}, {"reasoning_content": "Hmm."},
                      {"content": "Yes."}]
    assert translator.close() == TokenUsage(prompt_tokens=4, completion_tokens=4,
                                            cached_tokens=2, reasoning_tokens=3)
