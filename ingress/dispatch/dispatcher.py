"""Sending attempts to workers and receiving their frames.

One wildcard subscription (``<inbox>.*``) serves every request of this ingress: each
attempt gets a token and a queue, and frames are routed by the token in their subject. No
subscription is made or torn down per request.

When NATS goes away, nats-py reconnects and subscribes again by itself, so the inbox
needs no care; but the attempts in flight have lost frames, or will never hear from their
worker again. An attempt sent while the connection is down is refused at once
(:class:`Disconnected`) instead of waiting out the heartbeat deadline, and a reply whose
frame sequence has a gap (frames lost with a restarting server) stops with
:class:`FramesLost` instead of relaying an answer with a hole in it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, field

import nats.aio.client
import nats.aio.msg
import nats.errors

from core.telemetry import tracing
from ingress.errors import ApiError
from schemas import subjects
from schemas.frames import KIND_HEADER, SEQ_HEADER, DoneFrame, ErrorFrame, FrameKind
from schemas.infer import InferRequest

_STATUS_HEADER = "Status"
_NO_RESPONDERS = "503"
# How long an attempt waits for a reconnect in progress before it is refused.
RECONNECT_GRACE = 1.0


class NoWorker(Exception):
    """No worker subscribes to the provider's subject."""

    def __init__(self, provider: str) -> None:
        super().__init__(f"no worker is serving provider {provider!r}")
        self.provider = provider


class WorkerBusy(Exception):
    """The worker the attempt reached was at its concurrency and did not start it."""

    def __init__(self, provider: str) -> None:
        super().__init__(f"every worker of provider {provider!r} is busy")
        self.provider = provider


class Disconnected(Exception):
    """The ingress has no connection to NATS: nothing can be sent to a worker."""

    def __init__(self) -> None:
        super().__init__("the gateway has lost its connection to NATS")


class WorkerSilent(Exception):
    """The worker sent nothing, not even a heartbeat, for longer than the deadline.

    ``heard``: whether any frame of the attempt arrived before. A worker sends a heartbeat
    the moment it takes an attempt, before it calls the upstream; an attempt never heard
    from most likely never reached a worker (it was lost in transit, with the NATS node
    that carried it)."""

    def __init__(self, message: str = "the worker stopped responding",
                 heard: bool = True) -> None:
        super().__init__(message)
        self.heard = heard


class FramesLost(WorkerSilent):
    """Frames of the reply went missing (NATS restarted while they were in flight): what
    follows cannot be relayed as if nothing happened, and the worker may be gone too."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"frames of the answer were lost in transit (expected frame "
                         f"{expected}, got {got})")
        self.expected = expected
        self.got = got


class ReaderTooSlow(Exception):
    """The client reads the stream more slowly than the worker sends it, and the frames
    waiting for it passed the buffer's bound: the attempt is cancelled and the stream ends,
    rather than the ingress holding an unbounded answer in memory."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the client read the stream too slowly: more than {limit:,} "
                         "bytes of it were waiting to be sent")


# Once a reply has overflowed, only the worker's last word is kept (what the call used).
_REPORTS = frozenset({FrameKind.DONE.value, FrameKind.ERROR.value})
_CHUNKS = frozenset({FrameKind.CHUNK.value, FrameKind.CHUNKS.value})


@dataclass(slots=True, eq=False)
class Frame:
    """One frame of a reply. A done or error frame is parsed once, however many readers
    (the router, the admission settle, the relay) look at what it says."""

    kind: FrameKind
    body: bytes
    _parsed: DoneFrame | ErrorFrame | None = field(default=None, repr=False)

    def done(self) -> DoneFrame:
        if not isinstance(self._parsed, DoneFrame):
            self._parsed = DoneFrame.model_validate_json(self.body)
        return self._parsed

    def error(self) -> ErrorFrame:
        if not isinstance(self._parsed, ErrorFrame):
            self._parsed = ErrorFrame.model_validate_json(self.body)
        return self._parsed


class Reply:
    """The frames of one attempt, in the order the worker sent them."""

    __slots__ = (
        "_buffered",
        "_dispatcher",
        "_frames",
        "_overflow",
        "_seq",
        "_split",
        "_token",
        "_told",
        "_waiter",
        "provider",
        "request",
    )

    def __init__(
        self, dispatcher: Dispatcher, token: str, provider: str, request: InferRequest
    ) -> None:
        self._dispatcher = dispatcher
        self._token = token
        self._frames: deque[nats.aio.msg.Msg] = deque()
        # The chunks of a ``chunks`` frame after the first, read before the next message.
        self._split: deque[Frame] = deque()
        # Set while the relay waits for a frame; put() or the deadline wakes it.
        self._waiter: asyncio.Future[None] | None = None
        self._seq = 0
        self._buffered = 0  # bytes of frames waiting to be read
        self._overflow = False
        self._told = False
        self.provider = provider
        self.request = request

    def put(self, msg: nats.aio.msg.Msg) -> None:
        if self._overflow:  # only the worker's report is kept now
            if (msg.headers or {}).get(KIND_HEADER) in _REPORTS:
                self._append(msg)
            return
        self._append(msg)
        self._buffered += len(msg.data)
        if (self._buffered > self._dispatcher.stream_buffer
                and (msg.headers or {}).get(KIND_HEADER) in _CHUNKS):
            # The client is not keeping up: stop the upstream call now (its report is
            # kept), and end the stream when the relay reads next.
            self._overflow = True
            self._dispatcher.cancel_soon(self.request.request_id)

    def _append(self, msg: nats.aio.msg.Msg) -> None:
        self._frames.append(msg)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _take(self) -> nats.aio.msg.Msg:
        msg = self._frames.popleft()
        if not self._overflow:
            self._buffered -= len(msg.data)
        return msg

    def _overflowed(self) -> ReaderTooSlow:
        """Drop what waited for the client, keeping the worker's report if it came."""
        self._told = True
        reports = [msg for msg in self._frames
                   if (msg.headers or {}).get(KIND_HEADER) in _REPORTS]
        self._frames.clear()
        self._frames.extend(reports)
        self._split.clear()
        return ReaderTooSlow(self._dispatcher.stream_buffer)

    async def next(self, timeout: float) -> Frame:
        if self._overflow and not self._told:
            raise self._overflowed()
        if self._split:
            return self._split.popleft()
        if not self._frames:
            # One future and one timer handle per wait: asyncio.wait_for would cost a task
            # per call, and a stream reads twenty frames per answer.
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self._frames:
                if not self._dispatcher.connected:
                    raise WorkerSilent("the gateway lost its connection to NATS")
                raise WorkerSilent(heard=self._seq > 0)
        return self._frame(self._take())

    def ready(self) -> Frame | None:
        """The next frame if it has already arrived, else None (never waits)."""
        if self._overflow:
            return None  # next() says why
        if self._split:
            return self._split.popleft()
        if not self._frames:
            return None
        return self._frame(self._take())

    def _frame(self, msg: nats.aio.msg.Msg) -> Frame:
        headers = msg.headers or {}
        kind = headers.get(KIND_HEADER)
        if kind is None:
            if headers.get(_STATUS_HEADER) == _NO_RESPONDERS:
                raise NoWorker(self.provider)
            raise WorkerSilent()
        seq = headers.get(SEQ_HEADER)
        if seq is not None and not self._overflow:  # after an overflow, frames were dropped
            # A worker numbers every frame of an attempt from 1, heartbeats included.
            expected, self._seq = self._seq + 1, int(seq)
            if self._seq != expected:
                raise FramesLost(expected, self._seq)
        if kind == FrameKind.BUSY:
            raise WorkerBusy(self.provider)
        if kind == FrameKind.CHUNKS:
            first, *rest = msg.data.split(b"\n")
            self._split.extend(Frame(FrameKind.CHUNK, body) for body in rest)
            return Frame(FrameKind.CHUNK, first)
        return Frame(FrameKind(kind), msg.data)

    async def next_content(self, timeout: float) -> Frame:
        """The next frame that is not a heartbeat."""
        while True:
            frame = await self.next(timeout)
            if frame.kind is not FrameKind.HEARTBEAT:
                return frame

    def close(self) -> None:
        self._dispatcher.forget(self._token)

    async def cancel(self) -> None:
        """Tell the worker to abandon the attempt, and stop listening."""
        self.close()
        await self._dispatcher.cancel(self.request.request_id)

    async def signal_cancel(self) -> None:
        """Tell the worker to abandon the attempt, but keep listening for its last frame."""
        await self._dispatcher.cancel(self.request.request_id)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def trace_headers() -> dict[str, str]:
    """The current span's W3C context, for the worker to continue the trace."""
    carrier: dict[str, str] = {}
    tracing.inject(carrier)
    return carrier


class Dispatcher:
    def __init__(self, nc: nats.aio.client.Client, capacity_wait: float = 10.0,
                 stream_buffer: int = 16 * 1024 * 1024) -> None:
        self._nc = nc
        # How long an attempt may wait for a worker of a full provider (see capacity).
        self.capacity_wait = capacity_wait
        # The most bytes of one reply waiting for a slow client (see ReaderTooSlow).
        self.stream_buffer = stream_buffer
        self._cancels: set[asyncio.Task[None]] = set()
        self._prefix = nc.new_inbox()
        self._pending: dict[str, Reply] = {}
        self._tokens = itertools.count(1)

    async def start(self) -> None:
        await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_frame)

    async def _on_frame(self, msg: nats.aio.msg.Msg) -> None:
        reply = self._pending.get(msg.subject[len(self._prefix) + 1 :])
        if reply is not None:
            reply.put(msg)

    @property
    def connected(self) -> bool:
        return self._nc.is_connected

    async def _wait_connected(self, grace: float) -> bool:
        """Whether NATS is connected, waiting up to ``grace`` seconds for a reconnect in
        progress: a blip of a few hundred milliseconds should not fail requests."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while not self._nc.is_connected:
            if self._nc.is_closed or loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def send(self, request: InferRequest, provider: str) -> Reply:
        """Publish one attempt. Raises :class:`Disconnected` when NATS is away: a publish
        made then would sit in the client's buffer while the caller waits out the
        heartbeat deadline, and reach the worker, if ever, after the caller gave up."""
        if not self._nc.is_connected and not await self._wait_connected(RECONNECT_GRACE):
            raise Disconnected()
        token = str(next(self._tokens))
        reply = Reply(self, token, provider, request)
        self._pending[token] = reply
        try:
            await self._nc.publish(
                subjects.infer(provider),
                request.model_dump_json().encode(),
                reply=f"{self._prefix}.{token}",
                headers=trace_headers() if tracing.enabled else None,
            )
        except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError):
            self.forget(token)
            raise Disconnected() from None
        except nats.errors.MaxPayloadError:
            self.forget(token)
            raise ApiError(
                413,
                f"The request is too large: over the {self._nc.max_payload:,} bytes a message "
                "may carry on this gateway's NATS (its max_payload setting).",
                code="request_too_large",
            ) from None
        except Exception:
            self.forget(token)
            raise
        return reply

    def forget(self, token: str) -> None:
        self._pending.pop(token, None)

    async def cancel(self, request_id: str) -> None:
        if self._nc.is_connected:
            await self._nc.publish(subjects.cancel(request_id), b"")

    def cancel_soon(self, request_id: str) -> None:
        """:meth:`cancel`, from code that cannot wait (a frame callback)."""
        task = asyncio.get_running_loop().create_task(self.cancel(request_id))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    @property
    def in_flight(self) -> int:
        return len(self._pending)
