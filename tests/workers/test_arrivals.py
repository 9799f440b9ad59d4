"""A stream's chunks grouped by arrival: what came together leaves in one frame, in order,
with errors after what came before them, and a reader that stops stops the stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from schemas.frames import FrameKind
from workers.arrivals import FRAME_BYTES, GROUP, arrivals, chunk_frames


async def _bursts(*bursts: int, fail: Exception | None = None,
                  closed: list[bool] | None = None) -> AsyncIterator[int]:
    n = 0
    try:
        for size in bursts:
            for _ in range(size):
                n += 1
                yield n
            await asyncio.sleep(0.01)  # the next network read
        if fail is not None:
            raise fail
    finally:
        if closed is not None:
            closed.append(True)


async def test_items_that_arrive_together_come_in_one_group() -> None:
    groups = [group async for group in arrivals(_bursts(5, 1, 3))]
    assert groups == [[1, 2, 3, 4, 5], [6], [7, 8, 9]]


async def test_a_group_holds_at_most_GROUP_items() -> None:
    groups = [group async for group in arrivals(_bursts(GROUP + 10))]
    assert [len(g) for g in groups] == [GROUP, 10]
    assert [i for g in groups for i in g] == list(range(1, GROUP + 11))


async def test_an_error_comes_after_the_items_before_it() -> None:
    seen: list[int] = []
    with pytest.raises(ValueError, match="upstream broke"):
        async for group in arrivals(_bursts(2, 2, fail=ValueError("upstream broke"))):
            seen += group
    assert seen == [1, 2, 3, 4]


async def test_a_reader_that_stops_stops_the_stream() -> None:
    closed: list[bool] = []
    reader = arrivals(_bursts(3, 3, 3, closed=closed))
    assert await reader.__anext__() == [1, 2, 3]
    await reader.aclose()
    assert closed == [True]


async def test_a_cancelled_reader_stops_the_stream() -> None:
    closed: list[bool] = []

    async def read() -> None:  # as the worker reads: closed however it ends
        async with contextlib.aclosing(arrivals(_bursts(1, 1, 1, 1, 1, closed=closed))) as g:
            async for _ in g:
                await asyncio.sleep(1)

    task = asyncio.create_task(read())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [True]


def test_chunk_frames() -> None:
    assert list(chunk_frames([])) == []
    assert list(chunk_frames([b'{"a":1}'])) == [(FrameKind.CHUNK, b'{"a":1}')]
    assert list(chunk_frames([b"{1}", b"{2}", b"{3}"])) == [(FrameKind.CHUNKS, b"{1}\n{2}\n{3}")]
    # a body with a newline goes alone, in its place
    assert list(chunk_frames([b"{1}", b"{2}", b"x\ny", b"{3}"])) == [
        (FrameKind.CHUNKS, b"{1}\n{2}"), (FrameKind.CHUNK, b"x\ny"), (FrameKind.CHUNK, b"{3}")]
    big = b"x" * (FRAME_BYTES // 2)
    frames = list(chunk_frames([big, big, big]))
    assert [kind for kind, _ in frames] == [FrameKind.CHUNK, FrameKind.CHUNK, FrameKind.CHUNK]
    assert all(len(body) <= FRAME_BYTES for _, body in frames)
