"""The semantic cache: a chat request answered with the cached answer of an earlier one
that asked the same thing in other words.

A request the cache may serve (its ``cache`` controls, as for the exact cache) whose exact
key missed has its last user turn embedded by the configured embedding model, through the
gateway's own path (an embeddings call like any other: admitted, dispatched to a worker,
accounted). The nearest entry of its scope (:mod:`ingress.cache.semantic_key`) at or above
the similarity threshold answers it; otherwise its own answer is stored with that vector
once complete. Lookups and stores go through :mod:`ingress.cache.semantic_store`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ingress.cache.semantic_index import Vector, unit
from ingress.cache.semantic_key import Prompt, prompt_of
from ingress.cache.semantic_store import SemanticStore
from ingress.cache.store import CachedAnswer, Outcome
from schemas.cache_config import CacheSettings, SemanticSettings

log = logging.getLogger("aigw.ingress")

SIMILARITY_HEADER = "x-aigw-cache-similarity"
SEMANTIC_HIT = "semantic-hit"


@dataclass(frozen=True, slots=True)
class Nearest:
    """The nearest entry of a scope: its answer when it is a hit, None when it is not
    similar enough (or no longer readable)."""

    answer: CachedAnswer | None
    similarity: float


def embedding_of(response: Mapping[str, Any]) -> Vector | None:
    """The unit vector of an embeddings response's first item (floats), or None."""
    data = response.get("data")
    if not isinstance(data, list) or not data or not isinstance(data[0], Mapping):
        return None
    values = data[0].get("embedding")
    if not isinstance(values, list) or not values or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values):
        return None
    return unit(values)


class _Store:
    """Stores a miss's complete answer under its prompt's vector."""

    __slots__ = ("_prompt", "_store", "_ttl", "_vector")

    def __init__(self, store: SemanticStore, prompt: Prompt, vector: Vector,
                 ttl: float) -> None:
        self._store = store
        self._prompt = prompt
        self._vector = vector
        self._ttl = ttl

    def resolve(self, answer: CachedAnswer | None) -> None:
        if answer is not None:
            self._store.save(self._prompt.scope, self._prompt.text, self._vector, answer,
                             self._ttl)

    def release(self) -> None:
        return None


class Outcomes:
    """Several parties told of one captured answer (an in-flight leader's followers, the
    semantic store)."""

    __slots__ = ("_parts",)

    def __init__(self, *parts: Outcome | None) -> None:
        self._parts = [p for p in parts if p is not None]

    def resolve(self, answer: CachedAnswer | None) -> None:
        for part in self._parts:
            part.resolve(answer)

    def release(self) -> None:
        for part in self._parts:
            part.release()


def combine(*parts: Outcome | None) -> Outcome | None:
    present = [p for p in parts if p is not None]
    if len(present) <= 1:
        return present[0] if present else None
    return Outcomes(*present)


class SemanticCache:
    """The semantic cache as the config sets it (off without ``cache_params.type:
    semantic``, or without a store)."""

    def __init__(self, store: SemanticStore | None = None) -> None:
        self.store = store
        self.settings: SemanticSettings | None = None

    def configure(self, cache: CacheSettings) -> None:
        self.settings = cache.semantic
        if self.store is not None and cache.semantic is not None:
            self.store.index.bound = cache.semantic.max_entries_per_scope

    @property
    def embedding_model(self) -> str | None:
        return self.settings.embedding_model if self.settings is not None else None

    def prompt(self, endpoint: str, model: str, owner: str,
               body: Mapping[str, Any]) -> Prompt | None:
        """The request's prompt when the semantic cache applies to it."""
        if self.settings is None or self.store is None:
            return None
        return prompt_of(endpoint, model, owner, self.settings, body)

    def threshold(self, asked: float | None) -> float:
        assert self.settings is not None
        return asked if asked is not None else self.settings.similarity_threshold

    async def lookup(self, prompt: Prompt, vector: Vector, threshold: float,
                     max_age: float | None) -> Nearest | None:
        """The scope's nearest entry (None: the scope has none)."""
        if self.store is None:
            return None
        match = self.store.nearest(prompt.scope, vector)
        if match is None:
            return None
        similarity = min(match.similarity, 1.0)
        if similarity < threshold:
            return Nearest(None, similarity)
        answer = await self.store.answer(match.key)
        if answer is None or (max_age is not None and answer.age() > max_age):
            return Nearest(None, similarity)
        return Nearest(answer, similarity)

    def storer(self, prompt: Prompt, vector: Vector, ttl: float) -> Outcome | None:
        if self.store is None or ttl <= 0:
            return None
        return _Store(self.store, prompt, vector, ttl)
