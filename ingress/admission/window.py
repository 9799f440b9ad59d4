"""Sliding-window counters for requests and tokens per minute.

Each limit keeps two fixed 60 s buckets, the current and the previous one, and estimates
the last 60 s as ``previous * (unelapsed share of the current bucket) + current``. That is
the trade-off between a fixed window (one counter, but a client may send twice the limit
across a boundary) and a sliding log (exact, but one entry per request): two integers per
limit, a bounded error, and no burst at the boundary. Everything is integer arithmetic
scaled by the window length, in milliseconds, so Lua doubles and Python ints agree.

The Redis script implements :func:`fits` the same way; change them together.
"""

from __future__ import annotations

from ingress.admission.types import WINDOW_MS as WINDOW_MS


def split(now_ms: int, window_ms: int = WINDOW_MS) -> tuple[int, int]:
    """The current bucket's index and how far into it ``now_ms`` is."""
    return now_ms // window_ms, now_ms % window_ms


def weighted(prev: int, curr: int, elapsed: int, window_ms: int = WINDOW_MS) -> int:
    """Estimated use over the last window, times ``window_ms``."""
    return prev * (window_ms - elapsed) + curr * window_ms


def fits(prev: int, curr: int, elapsed: int, cost: int, limit: int,
         window_ms: int = WINDOW_MS) -> bool:
    return weighted(prev, curr + cost, elapsed, window_ms) <= limit * window_ms


def used(prev: int, curr: int, elapsed: int, window_ms: int = WINDOW_MS) -> int:
    return -(-weighted(prev, curr, elapsed, window_ms) // window_ms)


def remaining(prev: int, curr: int, elapsed: int, limit: int,
              window_ms: int = WINDOW_MS) -> int:
    return max(0, limit - used(prev, curr, elapsed, window_ms))


def reset_ms(prev: int, curr: int, elapsed: int, window_ms: int = WINDOW_MS) -> int:
    """Until the estimate is back to zero, OpenAI's "resets to its initial state": the
    current bucket must roll over and then decay for a whole window."""
    if curr > 0:
        return 2 * window_ms - elapsed
    if prev > 0:
        return window_ms - elapsed
    return 0


def retry_ms(prev: int, curr: int, elapsed: int, cost: int, limit: int,
             window_ms: int = WINDOW_MS) -> int | None:
    """Until ``cost`` more would fit, if nothing else is admitted meanwhile; ``None`` when
    it never can (``cost`` alone exceeds the limit)."""
    if cost > limit:
        return None
    if fits(prev, curr, elapsed, cost, limit, window_ms):
        return 0
    left = window_ms - elapsed
    room = limit - curr - cost
    if room >= 0:
        # Only the previous bucket's share is in the way, and it decays linearly:
        # prev * (left - t) <= room * window_ms.
        return left - (room * window_ms) // prev
    # Wait for the rollover, then for the old current bucket (now previous) to decay:
    # curr * (window_ms - t) <= (limit - cost) * window_ms.
    return left + window_ms - ((limit - cost) * window_ms) // curr


def go_duration(ms: int) -> str:
    """Go's ``time.Duration.String`` at millisecond precision, as OpenAI's reset headers
    use it: ``0s``, ``12ms``, ``1s``, ``26.604s``, ``6m0s``, ``1h0m0s``."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    text = f"{seconds}.{millis:03d}".rstrip("0") if millis else str(seconds)
    text += "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text
