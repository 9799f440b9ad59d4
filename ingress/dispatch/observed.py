"""An attempt's reply as the router sees it: in flight from the send to its last frame."""

from __future__ import annotations

from ingress.dispatch.dispatcher import Frame, Reply
from ingress.routing.router import Router
from schemas.frames import FrameKind


class ObservedReply:
    """An attempt's reply as the relay reads it, telling the router how the attempt ended:
    the latency and tokens of a done frame, the failure in an error frame, and when it
    stops being in flight. Chunks pass straight through."""

    __slots__ = ("_deployment_id", "_ended", "_reply", "_router", "provider", "request")

    def __init__(self, reply: Reply, router: Router | None, deployment_id: str) -> None:
        self._reply = reply
        self._router = router
        self._deployment_id = deployment_id
        self._ended = router is None
        self.request = reply.request
        self.provider = reply.provider
        if router is not None:
            router.load.started(deployment_id)

    async def next(self, timeout: float) -> Frame:
        frame = await self._reply.next(timeout)
        if frame.kind is FrameKind.DONE or frame.kind is FrameKind.ERROR:
            self._observe(frame)
        return frame

    def ready(self) -> Frame | None:
        frame = self._reply.ready()
        if frame is not None and frame.kind in (FrameKind.DONE, FrameKind.ERROR):
            self._observe(frame)
        return frame

    async def next_content(self, timeout: float) -> Frame:
        while True:
            frame = await self.next(timeout)
            if frame.kind is not FrameKind.HEARTBEAT:
                return frame

    def _observe(self, frame: Frame) -> None:
        if self._ended or self._router is None:
            return
        self._ended = True
        load = self._router.load
        if frame.kind is FrameKind.DONE:
            done = frame.done()
            load.finished(self._deployment_id, latency_ms=done.latency_ms or None,
                          ttft_ms=done.ttft_ms, tokens=done.usage.total_tokens)
            return
        failure = frame.error()
        load.finished(self._deployment_id,
                      tokens=failure.usage.total_tokens if failure.usage else 0)
        self._router.health.failed(self._deployment_id, failure.error)

    def _end(self) -> None:
        if not self._ended and self._router is not None:
            self._ended = True
            self._router.load.finished(self._deployment_id)

    def close(self) -> None:
        self._reply.close()
        self._end()

    async def cancel(self) -> None:
        self._end()
        await self._reply.cancel()

    async def signal_cancel(self) -> None:
        await self._reply.signal_cancel()
