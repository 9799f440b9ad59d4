"""One page of a list, for the console's tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

PER_PAGE = 25


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    number: int
    has_previous: bool
    has_next: bool
    total: int | None = None

    @classmethod
    def of(cls, everything: Sequence[T], number: int, per_page: int = PER_PAGE) -> Page[T]:
        """Page ``number`` (1-based; out of range clamps) of a list held in memory."""
        last = max(1, -(-len(everything) // per_page))
        number = min(max(1, number), last)
        start = (number - 1) * per_page
        return cls(items=everything[start:start + per_page], number=number,
                   has_previous=number > 1, has_next=number < last, total=len(everything))
