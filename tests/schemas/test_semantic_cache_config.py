"""``cache_params.type: semantic`` (and LiteLLM's redis-semantic, qdrant-semantic)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.cache_config import parse_cache_settings
from schemas.config_values import ConfigError

ALIASES = {"gpt", "emb"}


def parse(params: dict[str, Any]) -> Any:
    return parse_cache_settings({"cache": True, "cache_params": params}, ALIASES)


@pytest.mark.parametrize("kind", ["semantic", "redis-semantic", "qdrant-semantic"])
def test_each_semantic_type_turns_the_semantic_cache_on(kind: str) -> None:
    settings, ignored = parse({"type": kind, "embedding_model": "emb"})
    assert settings.semantic is not None
    assert settings.semantic.embedding_model == "emb"
    assert settings.semantic.similarity_threshold == 0.9
    assert settings.store is None  # the exact cache keeps its usual store
    assert ignored == []


def test_litellm_names_of_the_embedding_model_are_read_and_its_others_reported() -> None:
    settings, ignored = parse({"type": "qdrant-semantic", "similarity_threshold": 0.8,
                               "qdrant_semantic_cache_embedding_model": "emb",
                               "qdrant_collection_name": "c", "max_entries_per_scope": 50,
                               "max_temperature": 0.5})
    assert settings.semantic is not None
    assert (settings.semantic.embedding_model, settings.semantic.similarity_threshold,
            settings.semantic.max_entries_per_scope, settings.semantic.max_temperature) == (
        "emb", 0.8, 50, 0.5)
    assert ignored == ["litellm_settings.cache_params.qdrant_collection_name"]
    settings, _ = parse({"type": "redis-semantic",
                         "redis_semantic_cache_embedding_model": "emb"})
    assert settings.semantic is not None and settings.semantic.embedding_model == "emb"


def test_semantic_settings_without_a_semantic_type_are_reported_as_ignored() -> None:
    settings, ignored = parse({"type": "redis", "similarity_threshold": 0.8})
    assert settings.semantic is None
    assert ignored == ["litellm_settings.cache_params.similarity_threshold"]


@pytest.mark.parametrize(("params", "says"), [
    ({"type": "semantic"}, "needs the alias of an embedding model"),
    ({"type": "semantic", "embedding_model": "nope"}, "'nope' is not a model_name"),
    ({"type": "semantic", "embedding_model": 3}, "expected a model alias"),
    ({"type": "semantic", "embedding_model": "emb", "similarity_threshold": 1.5}, "at most 1"),
    ({"type": "semantic", "embedding_model": "emb", "similarity_threshold": "high"},
     "expected a number"),
    ({"type": "semantic", "embedding_model": "emb", "max_entries_per_scope": 0}, "from 1"),
    ({"type": "semantic", "embedding_model": "emb", "max_temperature": -1}, "0 or more"),
])
def test_a_bad_semantic_setting_is_refused_naming_it(params: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse(params)
