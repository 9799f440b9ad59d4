"""Child processes that die with their parent, whatever kills it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import sys
from types import FrameType

import uvicorn

_PR_SET_PDEATHSIG = 1


def child_preexec() -> None:
    """Run in the child between fork and exec: on Linux, ask the kernel to send SIGTERM
    when the parent dies, so not even a SIGKILLed ``aigw up`` leaves orphans."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class GracefulServer(uvicorn.Server):
    """A uvicorn server that shuts down on SIGINT/SIGTERM and then returns, instead of
    re-raising the signal: ``aigw up`` still has children to stop after it. Run from a
    terminal, it also stops on SIGHUP (the terminal closed); out of one, SIGHUP is left to
    the config reloader (SIGUSR1 reloads either way)."""

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        if _in_terminal():
            signal.signal(signal.SIGHUP, self.handle_exit)
        # Nothing to reload (no config file): SIGUSR1 must not kill the process either.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        super().run(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def _in_terminal() -> bool:
    try:
        return os.isatty(0)
    except OSError:
        return False
