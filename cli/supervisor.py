"""``aigw up`` keeps its children alive: a worker, the accounting process or nats-server
that exits or is killed is started again, after a backoff that doubles while it keeps
dying young and resets once it has stayed up a while.

The supervisor is a thread of the ``aigw up`` process (the ingress runs on its event loop
there). It only polls ``Popen.poll()``, so it costs nothing while all is well; what it sees
is readable through :meth:`Supervisor.status` for the readiness probe."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("aigw.supervisor")

MIN_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# A child that stayed up this long is healthy again: its next death restarts it at once.
STABLE_AFTER = 30.0

Start = Callable[[], "subprocess.Popen[bytes]"]


@dataclass
class Child:
    """One supervised process: how to start it and what became of it."""

    name: str
    start: Start
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = MIN_BACKOFF
    restart_at: float | None = None  # set while it is down, waiting for its restart
    last_exit: int | None = None

    @property
    def running(self) -> bool:
        return self.restart_at is None and self.process is not None

    def launch(self, now: float) -> None:
        self.process = self.start()
        self.started_at = now
        self.restart_at = None


@dataclass
class Supervisor:
    poll_interval: float = 0.2
    children: list[Child] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _idle: threading.Event = field(default_factory=threading.Event)
    _released: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def add(self, name: str, start: Start, process: subprocess.Popen[bytes] | None = None,
            ) -> Child:
        """Supervise ``name``: started now by ``start`` unless ``process`` already runs it."""
        child = Child(name, start)
        now = time.monotonic()
        if process is None:
            child.launch(now)
        else:
            child.process, child.started_at = process, now
        self.children.append(child)
        return child

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="aigw-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop restarting (returns once no restart is under way); the children themselves
        are stopped by the caller, then :meth:`close`."""
        self._stop.set()
        if self._thread is not None:
            self._idle.wait()

    def close(self) -> None:
        """End the thread. Only after the children are stopped: on Linux a child started
        by this thread is sent SIGTERM when the thread ends (``PR_SET_PDEATHSIG`` follows
        the thread that forked), which would cut nats-server from under draining workers."""
        self._stop.set()
        self._released.set()
        if self._thread is not None:
            self._thread.join()

    def processes(self) -> list[subprocess.Popen[bytes]]:
        with self._lock:
            return [c.process for c in self.children if c.process is not None]

    def status(self) -> dict[str, dict[str, object]]:
        """Each child: ``running`` or ``restarting``, its pid and how often it restarted."""
        with self._lock:
            return {c.name: {"state": "running" if c.running else "restarting",
                             "pid": c.process.pid if c.process is not None else None,
                             "restarts": c.restarts, "last_exit": c.last_exit}
                    for c in self.children}

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            for child in self.children:
                if not self._stop.is_set():
                    self.check(child, time.monotonic())
        self._idle.set()
        self._released.wait()

    def check(self, child: Child, now: float) -> None:
        """One look at ``child``: note its death, or restart it when its backoff is over."""
        if child.restart_at is None:
            code = child.process.poll() if child.process is not None else -1
            if code is None:
                return
            with self._lock:
                if now - child.started_at >= STABLE_AFTER:
                    child.backoff = MIN_BACKOFF
                child.last_exit = code
                child.restart_at = now + child.backoff
            log.warning("%s exited with code %s; restarting it in %.1fs",
                        child.name, code, child.backoff)
            return
        if now < child.restart_at or self._stop.is_set():
            return
        try:
            process = child.start()
        except Exception as exc:  # a start that fails is retried like a death
            with self._lock:
                child.backoff = min(child.backoff * 2, MAX_BACKOFF)
                child.restart_at = now + child.backoff
            log.error("%s could not be restarted (%s); next try in %.1fs",
                      child.name, exc, child.backoff)
            return
        with self._lock:
            child.process, child.started_at, child.restart_at = process, now, None
            child.restarts += 1
            child.backoff = min(child.backoff * 2, MAX_BACKOFF)
        log.warning("%s restarted (pid %d, restart %d)", child.name, process.pid,
                    child.restarts)
