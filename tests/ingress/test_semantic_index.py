"""The semantic cache's pure parts: the index, the entry codec, what is compared."""

from __future__ import annotations

import numpy as np
import pytest

from ingress.cache.semantic import combine, embedding_of
from ingress.cache.semantic_entry import (
    BadEntry,
    decode_answer,
    decode_head,
    encode,
    entry_key,
)
from ingress.cache.semantic_index import SemanticIndex, unit
from ingress.cache.semantic_key import last_user_text, prompt_of
from ingress.cache.store import CachedAnswer
from schemas.cache_config import SemanticSettings
from schemas.usage import TokenUsage
from tests.fakes.concept_embeddings import embed

FAR = 1e12
SETTINGS = SemanticSettings(embedding_model="emb")


def vec(text: str) -> np.ndarray:
    found = unit(embed(text))
    assert found is not None
    return found


def chat(text: str, **fields: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": text}], **fields}


def test_a_paraphrase_is_nearest_and_above_the_threshold() -> None:
    index = SemanticIndex(bound=10)
    index.add("s", "france", vec("What is the capital of France?"), FAR)
    index.add("s", "spain", vec("What is the capital of Spain?"), FAR)
    match = index.nearest("s", vec("Tell me France's capital city"), now=0)
    assert match is not None and match.key == "france"
    assert match.similarity > 0.9
    other = index.nearest("s", vec("What is the capital of Germany?"), now=0)
    assert other is not None and other.similarity < 0.6


def test_scopes_never_meet() -> None:
    index = SemanticIndex(bound=10)
    index.add("team-a", "k", vec("What is the capital of France?"), FAR)
    assert index.nearest("team-b", vec("What is the capital of France?"), now=0) is None


def test_an_expired_entry_is_never_found_and_is_forgotten() -> None:
    index = SemanticIndex(bound=10)
    index.add("s", "old", vec("What is the capital of France?"), expires_at=100)
    index.add("s", "new", vec("What is the capital of Spain?"), expires_at=300)
    match = index.nearest("s", vec("What is the capital of France?"), now=200)
    assert match is not None and match.key == "new"
    assert "old" not in index
    assert index.drop_expired(now=400) == 1
    assert len(index) == 0


def test_a_full_scope_drops_its_oldest_entries_and_says_which() -> None:
    index = SemanticIndex(bound=3)
    texts = ["capital of France", "capital of Spain", "capital of Germany", "weather today"]
    dropped: list[str] = []
    for i, text in enumerate(texts):
        dropped += index.add("s", f"k{i}", vec(text), FAR)
    assert dropped == ["k0"]
    assert index.scope_size("s") == 3
    # Adding a key again replaces it in place: nothing dropped.
    assert index.add("s", "k3", vec("weather today"), FAR) == []
    assert index.add("other", "x", vec("weather today"), FAR) == []  # bound is per scope


def test_removing_keeps_the_other_rows_findable() -> None:
    index = SemanticIndex(bound=100)
    texts = {f"k{i}": t for i, t in enumerate(
        ["capital of France", "capital of Spain", "weather today", "sort a python list"])}
    for key, text in texts.items():
        index.add("s", key, vec(text), FAR)
    index.remove("k0")
    index.remove("missing")
    for key, text in list(texts.items())[1:]:
        match = index.nearest("s", vec(text), now=0)
        assert match is not None and match.key == key
        assert match.similarity == pytest.approx(1.0, abs=1e-5)


def test_vectors_of_another_size_start_the_scope_over() -> None:
    index = SemanticIndex(bound=10)
    index.add("s", "a", unit([1.0, 0.0, 0.0]), FAR)  # type: ignore[arg-type]
    assert index.nearest("s", unit([1.0, 0.0]), now=0) is None  # type: ignore[arg-type]
    index.add("s", "b", unit([1.0, 0.0]), FAR)  # type: ignore[arg-type]
    assert "a" not in index and len(index) == 1


def test_a_vector_without_direction_is_refused() -> None:
    assert unit([0.0, 0.0]) is None
    assert unit([]) is None
    assert embedding_of({"data": [{"embedding": [0, 0]}]}) is None
    assert embedding_of({"data": [{"embedding": "abc"}]}) is None
    assert embedding_of({"data": []}) is None
    found = embedding_of({"data": [{"embedding": [3, 4]}]})
    assert found is not None and found.tolist() == pytest.approx([0.6, 0.8])


def test_an_entry_round_trips_and_its_head_reads_without_the_answer() -> None:
    answer = CachedAnswer(stored_at=1.0, provider="openai", usage=TokenUsage(),
                          response={"choices": []})
    vector = vec("capital of France")
    key = entry_key("scope1", "capital of France")
    value = encode(vector, 123.5, answer)
    head = decode_head(key, value)
    assert head.scope == "scope1" and head.expires_at == 123.5
    assert np.allclose(head.vector, vector)
    assert decode_answer(key, value) == answer
    with pytest.raises(BadEntry):
        decode_head(key, b"something else")
    with pytest.raises(BadEntry):
        decode_head(key, value[:30])


def test_only_the_last_user_turn_is_compared() -> None:
    assert last_user_text(chat("  Hi there ")) == "Hi there"
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert last_user_text({"messages": [{"role": "user", "content": parts}]}) == "a\nb"
    image = [{"type": "image_url", "image_url": {"url": "http://x"}}]
    assert last_user_text({"messages": [{"role": "user", "content": image}]}) is None
    assert last_user_text({"messages": [{"role": "tool", "content": "x"}]}) is None
    assert last_user_text({"messages": []}) is None


def test_everything_but_the_last_turn_must_match_exactly() -> None:
    def scope(body: dict[str, object], owner: str = "team:a", model: str = "m") -> str:
        found = prompt_of("chat", model, owner, SETTINGS, body)
        assert found is not None
        return found.scope

    base = scope(chat("capital of France"))
    assert scope(chat("France's capital city")) == base
    assert scope(chat("capital of France", user="u1", metadata={"a": "b"})) == base
    assert scope(chat("capital of France", stream=True)) == base
    assert scope(chat("capital of France", temperature=0.0)) != base
    assert scope(chat("capital of France"), owner="team:b") != base
    assert scope(chat("capital of France"), model="other") != base
    for different in ({"tools": [{"type": "function", "function": {"name": "f"}}]},
                      {"response_format": {"type": "json_object"}}, {"n": 2}, {"seed": 1},
                      {"max_tokens": 5}, {"tool_choice": "none"}):
        assert scope(chat("capital of France", **different)) != base, different
    other_system = chat("capital of France")
    other_system["messages"][0]["content"] = "Be long."  # type: ignore[index]
    assert scope(other_system) != base


def test_a_request_too_random_or_not_a_chat_is_not_served_by_meaning() -> None:
    assert prompt_of("chat", "m", "o", SETTINGS, chat("x", temperature=1.5)) is None
    assert prompt_of("chat", "m", "o", SETTINGS, chat("x", temperature="hot")) is None
    assert prompt_of("embeddings", "m", "o", SETTINGS, {"input": "x"}) is None
    lenient = SemanticSettings(embedding_model="emb", max_temperature=2.0)
    assert prompt_of("chat", "m", "o", lenient, chat("x", temperature=1.5)) is not None


def test_overflow_names_what_adding_a_key_would_drop() -> None:
    index = SemanticIndex(bound=2)
    assert index.overflow("s", "a") == []
    index.add("s", "a", vec("capital of France"), FAR)
    index.add("s", "b", vec("capital of Spain"), FAR)
    assert index.overflow("s", "c") == ["a"]
    assert index.overflow("s", "b") == []  # already there: replaced, nothing dropped


class _Told:
    def __init__(self) -> None:
        self.resolved: list[CachedAnswer | None] = []
        self.released = 0

    def resolve(self, answer: CachedAnswer | None) -> None:
        self.resolved.append(answer)

    def release(self) -> None:
        self.released += 1


def test_a_captured_answer_reaches_every_party_once() -> None:
    lead, store = _Told(), _Told()
    assert combine(None, None) is None
    assert combine(lead, None) is lead
    both = combine(lead, store)
    assert both is not None
    answer = CachedAnswer(stored_at=1.0, provider="openai", usage=TokenUsage())
    both.resolve(answer)
    both.release()
    assert lead.resolved == store.resolved == [answer]
    assert lead.released == store.released == 1
