"""A local spool for usage events not yet acknowledged by JetStream.

Each event is appended to the spool as it is submitted (one ``write`` to the page cache,
so a process killed outright keeps it; ``fsync`` follows in batches, for a machine that
goes down) and leaves it when JetStream acknowledges it: a segment file is deleted once
every event in it is acknowledged. A process that starts on a spool replays what is left,
and JetStream's ``Nats-Msg-Id`` dedup (and accounting's own, past that window) keeps each
event once.

Spools are per process: a process claims the first directory ``<root>/<name>-<k>`` whose
lock it can take, and adopts the leftovers of same-named directories nobody holds (a
sibling that died and was not restarted), so nothing is stranded: at its start, and every
few seconds after (:meth:`Spool.adopt_orphans`), so that the events of a worker killed
beside a live one reach accounting without waiting for a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger("aigw.spool")

SEGMENT_BYTES = 4 * 1024 * 1024
MAX_BYTES = 256 * 1024 * 1024
_SUFFIX = ".spool"


class SpoolFull(Exception):
    """The spool holds ``MAX_BYTES`` of unacknowledged events already."""


def _lock(directory: Path) -> int | None:
    """The directory's lock, held by this process, or None if another holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{_SUFFIX}"), key=lambda p: int(p.stem))


class Spool:
    def __init__(self, directory: Path, lock_fd: int, max_bytes: int = MAX_BYTES,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self._lock_fd = lock_fd
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        # segment number -> [unacknowledged events, bytes]
        self._open: dict[int, list[int]] = {}
        self._current = 0
        self._fd = -1
        self._dirty = False
        self.size = 0
        self._root: Path | None = None  # where same-named siblings live (claim)
        self._name = ""

    @classmethod
    def claim(cls, root: Path, name: str, **limits: int) -> Spool:
        k = 0
        while (fd := _lock(root / f"{name}-{k}")) is None:
            k += 1
        spool = cls(root / f"{name}-{k}", fd, **limits)
        spool._root, spool._name = root, name
        for sibling in sorted(root.glob(f"{name}-*")):
            if sibling != spool.directory and sibling.is_dir():
                spool._adopt(sibling)
        return spool

    def _highest(self) -> int:
        on_disk = max((int(p.stem) for p in _segments(self.directory)), default=0)
        return max(on_disk, self._current, *self._open)

    def _adopt(self, sibling: Path) -> list[Path]:
        """Move the segments of ``sibling`` (if nobody holds it) into this spool."""
        fd = _lock(sibling)
        if fd is None:
            return []  # alive: its own process replays it
        moved: list[Path] = []
        try:
            next_number = self._highest() + 1
            for i, segment in enumerate(_segments(sibling)):
                target = self.directory / f"{next_number + i}{_SUFFIX}"
                segment.rename(target)
                moved.append(target)
            if moved:
                log.info("adopted the usage spool of %s", sibling.name)
        finally:
            os.close(fd)
        return moved

    def adopt_orphans(self) -> list[tuple[int, bytes]]:
        """Take over the spools of same-named processes that died since; their events, to
        publish (acknowledged against the segments they now sit in)."""
        if self._root is None:
            return []
        found: list[tuple[int, bytes]] = []
        for sibling in sorted(self._root.glob(f"{self._name}-*")):
            if sibling == self.directory or not sibling.is_dir():
                continue
            for segment in self._adopt(sibling):
                found.extend(self._load(segment))
        return found

    def _load(self, segment: Path) -> list[tuple[int, bytes]]:
        number = int(segment.stem)
        lines = [line for line in segment.read_bytes().split(b"\n") if line.strip()]
        if not lines:
            segment.unlink()
            return []
        size = segment.stat().st_size
        self._open[number] = [len(lines), size]
        self.size += size
        return [(number, line) for line in lines]

    def recover(self) -> list[tuple[int, bytes]]:
        """What earlier runs left: every line of every segment, to publish again."""
        found: list[tuple[int, bytes]] = []
        for segment in _segments(self.directory):
            found.extend(self._load(segment))
            self._current = max(self._current, int(segment.stem))
        self._roll()
        return found

    def _path(self, number: int) -> Path:
        return self.directory / f"{number}{_SUFFIX}"

    def _roll(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._maybe_delete(self._current)
        self._current = self._highest() + 1
        self._fd = os.open(self._path(self._current), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                           0o600)
        self._open[self._current] = [0, 0]

    def append(self, line: bytes) -> int:
        """Write one event (no newline in it); the segment to acknowledge it against."""
        if self.size + len(line) + 1 > self._max_bytes:
            raise SpoolFull()
        if self._open[self._current][1] >= self._segment_bytes:
            self._roll()
        os.write(self._fd, line + b"\n")
        held = self._open[self._current]
        held[0] += 1
        held[1] += len(line) + 1
        self.size += len(line) + 1
        self._dirty = True
        return self._current

    def acked(self, segment: int) -> None:
        held = self._open.get(segment)
        if held is None:
            return
        held[0] -= 1
        self._maybe_delete(segment)

    def _maybe_delete(self, segment: int) -> None:
        held = self._open.get(segment)
        if held is None or held[0] > 0:
            return
        if segment == self._current:
            # Everything written is acknowledged: empty the file, so that a crash now
            # replays nothing already published.
            if held[1]:
                os.ftruncate(self._fd, 0)
                self.size -= held[1]
                held[1] = 0
            return
        del self._open[segment]
        self.size -= held[1]
        with contextlib.suppress(FileNotFoundError):
            self._path(segment).unlink()

    def sync(self) -> None:
        """``fsync`` what was written since the last call (run it off the event loop)."""
        if self._dirty and self._fd >= 0:
            self._dirty = False
            with contextlib.suppress(OSError):  # rolled (closed) meanwhile: synced then
                os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            held = self._open.get(self._current)
            if held is not None and held[0] == 0:
                del self._open[self._current]
                with contextlib.suppress(FileNotFoundError):
                    self._path(self._current).unlink()
        os.close(self._lock_fd)


def claim(root: Path | None, name: str) -> Spool | None:
    """The process's spool under ``root`` (``AIGW_SPOOL_DIR``); None without a root."""
    if root is None:
        log.info("no AIGW_SPOOL_DIR: usage events wait in memory only until published")
        return None
    return Spool.claim(root, name)
