"""The usage spool: events not yet acknowledged by JetStream survive a process that dies,
and are published once when a process starts on the spool again."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import nats
import pytest

from cli.nats_server import NatsServer
from core.publisher import UsagePublisher
from core.spool import Spool, SpoolFull
from schemas.usage import UsageEvent, UsageStatus
from tests.usage_stream import stream_events


def _event(i: int) -> UsageEvent:
    return UsageEvent(event_id=f"spool-{i}", request_id=f"r{i}", model_alias="m",
                      provider="mock", status=UsageStatus.OK)


def _die(spool: Spool) -> None:
    """What SIGKILL leaves: the files as written, the lock released by the kernel."""
    os.close(spool._fd)
    os.close(spool._lock_fd)


async def _until(check, within: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


def test_acknowledged_events_leave_the_spool(tmp_path: Path) -> None:
    spool = Spool.claim(tmp_path, "worker-mock", segment_bytes=100)
    assert spool.recover() == []
    segments = [spool.append(b"x" * 40) for _ in range(6)]
    assert segments[0] != segments[-1]  # rolled over at 100 bytes
    assert spool.size == 6 * 41
    assert segments == [segments[0]] * 3 + [segments[3]] * 3
    for segment in segments[:4]:
        spool.acked(segment)
    # The first segment is gone; the second stays whole until all of it is acknowledged.
    assert spool.size == 3 * 41
    assert [p.stem for p in spool.directory.glob("*.spool")] == [str(segments[3])]
    for segment in segments[4:]:
        spool.acked(segment)
    assert spool.size == 0
    assert all(p.stat().st_size == 0 for p in spool.directory.glob("*.spool"))
    spool.close()


def test_a_bounded_spool_refuses_beyond_its_size(tmp_path: Path) -> None:
    spool = Spool.claim(tmp_path, "ingress", max_bytes=100)
    spool.recover()
    spool.append(b"a" * 60)
    with pytest.raises(SpoolFull):
        spool.append(b"b" * 60)
    spool.close()


def test_a_dead_process_leaves_its_events_to_the_next(tmp_path: Path) -> None:
    first = Spool.claim(tmp_path, "worker-mock")
    first.recover()
    kept = first.append(b"one")
    acked = first.append(b"two")
    first.append(b"three")
    first.acked(acked)  # published: the spool still has it on disk, nothing says otherwise
    assert kept == acked
    _die(first)
    second = Spool.claim(tmp_path, "worker-mock")
    assert second.directory == first.directory
    assert sorted(line for _, line in second.recover()) == [b"one", b"three", b"two"]
    second.close()


def test_live_spools_are_not_shared_and_dead_siblings_are_adopted(tmp_path: Path) -> None:
    alive = Spool.claim(tmp_path, "worker-openai")
    alive.recover()
    alive.append(b"alive's")
    dead = [Spool.claim(tmp_path, "worker-openai") for _ in range(2)]
    for i, spool in enumerate(dead):
        spool.recover()
        spool.append(f"dead {i}".encode())
        _die(spool)
    restarted = Spool.claim(tmp_path, "worker-openai")
    assert restarted.directory not in (alive.directory,)
    lines = sorted(line for _, line in restarted.recover())
    assert lines == [b"dead 0", b"dead 1"]  # its own leftovers and the other dead one's
    assert sorted(line for _, line in Spool(alive.directory, os.dup(0)).recover()) == \
        [b"alive's"]
    restarted.close()
    alive.close()


async def test_a_publisher_killed_while_nats_is_away_publishes_on_restart_once(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    first = UsagePublisher(nc.jetstream(), spool=Spool.claim(tmp_path / "spool", "worker"))
    await first.start()
    for i in range(5):
        first.submit(_event(i))
    await _until(lambda: first.published == 5)
    server.stop()
    for i in range(5, 25):
        first.submit(_event(i))
    await _until(lambda: first.spooled == 20)
    # SIGKILL: no stop, no flush; what was not acknowledged is only in the spool.
    assert first._task is not None and first._syncer is not None
    first._task.cancel()
    first._syncer.cancel()
    assert first._spool is not None
    _die(first._spool)
    # A killed process closes nothing. nats-py's close() writes what the pump buffered
    # while reconnecting (its retried publish) into the lost socket, and raises for it.
    with contextlib.suppress(ConnectionResetError):
        await nc.close()

    server.start()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    second = UsagePublisher(nc.jetstream(), spool=Spool.claim(tmp_path / "spool", "worker"))
    await second.start()
    await _until(lambda: second.pending == 0)
    assert second.published == 20
    in_stream = [e["event_id"] for e in await stream_events(nc.jetstream())]
    assert sorted(in_stream) == sorted(f"spool-{i}" for i in range(25))  # each event once
    await second.stop()
    await nc.close()
    server.stop()


def test_a_live_spool_adopts_a_sibling_that_dies_after_it_started(tmp_path: Path) -> None:
    alive = Spool.claim(tmp_path, "worker-openai")
    doomed = Spool.claim(tmp_path, "worker-openai")
    alive.recover()
    doomed.recover()
    assert alive.adopt_orphans() == []  # a live sibling is left alone
    for i in range(3):
        doomed.append(f"d{i}".encode())
    own = alive.append(b"a0")
    _die(doomed)
    adopted = alive.adopt_orphans()
    assert sorted(line for _, line in adopted) == [b"d0", b"d1", b"d2"]
    assert all(segment != own for segment, _ in adopted)
    assert list(doomed.directory.glob("*.spool")) == []
    # Acknowledged, the adopted segment goes; the spool keeps writing where it was.
    for segment, _ in adopted:
        alive.acked(segment)
    assert alive.append(b"a1") == own
    assert sorted(p.name for p in alive.directory.glob("*.spool")) == [f"{own}.spool"]
    assert alive.adopt_orphans() == []  # nothing twice
    alive.close()
