"""A client that hangs up on a non-streamed call stops the upstream call.

A streamed answer notices a departed client at its next write; a non-streamed one writes
nothing until the worker is done, so without a watch the upstream call (and its bill) would
run to the end for nobody. :class:`HangUp` listens on the ASGI ``receive`` channel, which
after the body has been read has only ``http.disconnect`` left to say, and cancels the
waiting handler when it comes; the relay then tells the worker to abandon the attempt, and
the worker accounts it as cancelled with what the upstream had billed.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive

from ingress.errors import ApiError


class HangUp:
    """Watches one request's connection while its handler waits for the worker."""

    __slots__ = ("_handler", "_watch", "gone")

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._handler = asyncio.current_task()
        self._watch = asyncio.create_task(self._listen(receive))

    async def _listen(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                if self._handler is not None:
                    self._handler.cancel()
                return

    def close(self) -> None:
        self._watch.cancel()

    def absorb(self) -> ApiError:
        """After the handler was cancelled because the client left: take the cancellation
        back (the handler goes on to clean up) and say what the client would have got."""
        if self._handler is not None:
            self._handler.uncancel()
        return ApiError(499, "the client closed the connection before the answer was ready",
                        type="invalid_request_error", code="client_closed_request")
