"""The sliding-window arithmetic behind admission: Go-style durations for the reset headers
and the first moment a refused request fits."""

from __future__ import annotations

import random

import pytest

from ingress.admission import (
    window,
)


@pytest.mark.parametrize(("ms", "text"), [
    (0, "0s"), (12, "12ms"), (1000, "1s"), (26_604, "26.604s"), (61_500, "1m1.5s"),
    (360_000, "6m0s"), (3_600_000, "1h0m0s"),
])
def test_go_duration_matches_go(ms: int, text: str) -> None:
    assert window.go_duration(ms) == text


def test_retry_ms_is_the_first_moment_the_request_fits() -> None:
    w = window.WINDOW_MS

    def fits_after(prev: int, curr: int, elapsed: int, cost: int, limit: int, t: int) -> bool:
        at_ms = elapsed + t
        if at_ms < w:
            return window.fits(prev, curr, at_ms, cost, limit)
        return window.fits(curr, 0, at_ms - w, cost, limit)

    rng = random.Random(3)
    for _ in range(2000):
        limit = rng.randint(1, 50)
        prev, curr = rng.randint(0, 60), rng.randint(0, 60)
        elapsed, cost = rng.randrange(w), rng.randint(1, limit)
        t = window.retry_ms(prev, curr, elapsed, cost, limit)
        assert t is not None
        assert fits_after(prev, curr, elapsed, cost, limit, t)
        assert t == 0 or not fits_after(prev, curr, elapsed, cost, limit, t - 1)
    assert window.retry_ms(0, 0, 0, 11, 10) is None
