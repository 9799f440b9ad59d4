"""The semantic cache's in-process index: per scope, a matrix of unit vectors searched by
exact cosine similarity (one matrix-vector product with numpy).

Exact search, not an approximate one: a scope holds at most a few thousand entries
(``max_entries_per_scope``), where one product over the scope's matrix takes well under a
millisecond and finds the true nearest neighbour; an ANN graph would add a build cost per
insert, deletions it handles badly, and a recall below 1 (figures in the README and
``bench/semantic_cache.py``). Each replica builds the same index from the shared entries
(:mod:`ingress.cache.semantic_store`); this module does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Match:
    key: str
    similarity: float


def one_blas_thread() -> None:
    """Keep numpy's BLAS to one thread in this process. A lookup is one small
    matrix-vector product: more threads only contend with the event loop and the other
    processes, and on a loaded machine made a 10k x 384 lookup 20 times slower (the
    README's figures)."""
    threadpool_limits(limits=1, user_api="blas")


def unit(vector: Any) -> Vector | None:
    """``vector`` as float32 of length 1, or None when it has no direction (or is not
    finite)."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(array))
    if not array.size or not np.isfinite(norm) or norm == 0.0:
        return None
    return array / norm


class _Scope:
    """One scope's entries: rows of ``matrix`` up to ``size``, in insertion order of
    ``added`` (the oldest go first when the scope is full)."""

    __slots__ = ("added", "expires", "keys", "matrix", "rows", "size")

    def __init__(self, dims: int) -> None:
        self.matrix: Vector = np.empty((8, dims), dtype=np.float32)
        self.expires = np.empty(8, dtype=np.float64)
        self.added = np.empty(8, dtype=np.int64)
        self.keys: list[str] = []
        self.rows: dict[str, int] = {}
        self.size = 0

    @property
    def dims(self) -> int:
        return int(self.matrix.shape[1])

    def put(self, key: str, vector: Vector, expires_at: float, order: int) -> None:
        row = self.rows.get(key)
        if row is None:
            if self.size == len(self.matrix):
                grow = len(self.matrix) * 2
                self.matrix = np.resize(self.matrix, (grow, self.dims))
                self.expires = np.resize(self.expires, grow)
                self.added = np.resize(self.added, grow)
            row = self.size
            self.size += 1
            self.keys.append(key)
            self.rows[key] = row
        self.matrix[row] = vector
        self.expires[row] = expires_at
        self.added[row] = order

    def drop(self, key: str) -> bool:
        row = self.rows.pop(key, None)
        if row is None:
            return False
        last = self.size - 1
        if row != last:  # the last row takes the freed one's place
            moved = self.keys[last]
            self.matrix[row] = self.matrix[last]
            self.expires[row] = self.expires[last]
            self.added[row] = self.added[last]
            self.keys[row] = moved
            self.rows[moved] = row
        self.keys.pop()
        self.size = last
        return True

    def oldest(self, count: int) -> list[str]:
        if count <= 0:
            return []
        order = np.argsort(self.added[:self.size], kind="stable")[:count]
        return [self.keys[int(i)] for i in order]

    def expired(self, now: float) -> list[str]:
        return [self.keys[int(i)] for i in np.flatnonzero(self.expires[:self.size] <= now)]


class SemanticIndex:
    """Every scope's entries, each under its key. ``bound``: the most entries a scope
    keeps; adding past it drops the oldest, and says which, so that the writer can delete
    them from the shared store too."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._scopes: dict[str, _Scope] = {}
        self._scope_of: dict[str, str] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._scope_of)

    def __contains__(self, key: str) -> bool:
        return key in self._scope_of

    def scope_size(self, scope: str) -> int:
        found = self._scopes.get(scope)
        return found.size if found is not None else 0

    def add(self, scope: str, key: str, vector: Vector, expires_at: float) -> list[str]:
        """Index ``key`` (again, when it is there: its vector and expiry are replaced).
        ``vector`` is a unit vector (:func:`unit`). Returns the keys dropped to keep the
        scope within its bound."""
        entries = self._scopes.get(scope)
        if entries is None or entries.dims != vector.shape[0]:
            # A new scope, or the embedding model's vectors changed size: start it over.
            if entries is not None:
                for old in list(entries.keys):
                    self._scope_of.pop(old, None)
            entries = self._scopes[scope] = _Scope(int(vector.shape[0]))
        self._order += 1
        entries.put(key, vector, expires_at, self._order)
        self._scope_of[key] = scope
        dropped = entries.oldest(entries.size - self.bound)
        for old in dropped:
            self.remove(old)
        return dropped

    def overflow(self, scope: str, key: str) -> list[str]:
        """The keys that adding ``key`` to ``scope`` will drop (its oldest, past the bound)."""
        entries = self._scopes.get(scope)
        if entries is None or key in entries.rows:
            return []
        return entries.oldest(entries.size + 1 - self.bound)

    def remove(self, key: str) -> None:
        scope = self._scope_of.pop(key, None)
        if scope is None:
            return
        entries = self._scopes[scope]
        entries.drop(key)
        if entries.size == 0:
            del self._scopes[scope]

    def drop_expired(self, now: float) -> int:
        """Forget every expired entry; how many there were."""
        gone = [key for entries in self._scopes.values() for key in entries.expired(now)]
        for key in gone:
            self.remove(key)
        return len(gone)

    def nearest(self, scope: str, vector: Vector, now: float) -> Match | None:
        """The unexpired entry of ``scope`` most similar to the unit vector ``vector``."""
        entries = self._scopes.get(scope)
        if entries is None or entries.dims != vector.shape[0]:
            return None
        for key in entries.expired(now):
            self.remove(key)
        if entries.size == 0:
            return None
        similarities = entries.matrix[:entries.size] @ vector
        best = int(np.argmax(similarities))
        return Match(entries.keys[best], float(similarities[best]))
