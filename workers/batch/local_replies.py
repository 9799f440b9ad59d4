"""A batch item's frames, kept in the process: the runner hands the service a local reply
subject, and the frames the service sends to it end here instead of crossing the bus."""

from __future__ import annotations

import asyncio
import uuid

from schemas.frames import KIND_HEADER, DoneFrame, ErrorFrame, FrameKind
from workers.service import WorkerService

LOCAL_PREFIX = "_AIGW_BATCH_LOCAL."


class LocalReplies:
    def __init__(self, service: WorkerService) -> None:
        self._service = service
        self._waiting: dict[str, asyncio.Future[DoneFrame | ErrorFrame]] = {}
        self._calling = 0  # items inside the service: interactive = in_flight - _calling

    @staticmethod
    def takes(subject: str) -> bool:
        return subject.startswith(LOCAL_PREFIX)

    def deliver(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        """A frame the service sent to a local reply subject."""
        future = self._waiting.get(subject)
        if future is None or future.done():
            return
        kind = headers.get(KIND_HEADER)
        if kind == FrameKind.DONE.value:
            future.set_result(DoneFrame.model_validate_json(body))
        elif kind == FrameKind.ERROR.value:
            future.set_result(ErrorFrame.model_validate_json(body))

    @property
    def calling(self) -> int:
        """Items whose attempt the service is running (counted in its ``in_flight``)."""
        return self._calling

    async def attempt(self, data: bytes) -> DoneFrame | ErrorFrame | None:
        """Run one attempt through the service; its last frame, or None if it sent none."""
        reply = f"{LOCAL_PREFIX}{uuid.uuid4().hex}"
        future: asyncio.Future[DoneFrame | ErrorFrame] = (
            asyncio.get_running_loop().create_future())
        self._waiting[reply] = future
        self._calling += 1
        try:
            await self._service.handle(data, reply)
            return future.result() if future.done() else None
        finally:
            self._calling -= 1
            self._waiting.pop(reply, None)
