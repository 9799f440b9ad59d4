"""Request bodies capped per route while they stream in, before the memory is spent.

A declared ``Content-Length`` over the route's cap is refused before a byte of the body is
read; a body without one (chunked) is counted as it arrives and refused the moment it
passes the cap. Either way the client gets OpenAI's error JSON with status 413, and the
ingress holds at most the cap of that body.

| routes | cap | setting |
|---|---|---|
| inference (chat completions, embeddings, ...) | 8 MiB | ``AIGW_MAX_REQUEST_BYTES`` |
| ``POST /v1/files`` | 200 MiB and the form around it | ``AIGW_MAX_FILE_BYTES`` |
| audio and image uploads (``/v1/audio/*``, edits) | 25 MiB and form | ``AIGW_MAX_MEDIA_BYTES`` |
| everything else (admin, batches, ...) | 1 MiB | ``AIGW_MAX_OTHER_BYTES`` |

The inference cap matches the bus: an attempt larger than NATS's ``max_payload`` (8 MiB in
embedded mode) could not reach a worker anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingress.errors import ApiError, speaks_anthropic

INFERENCE_PATHS = frozenset({
    "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/messages",
    "/v1/messages/count_tokens", "/messages", "/messages/count_tokens",
    "/v1/responses", "/v1/images/generations", "/v1/audio/speech",
    "/images/generations", "/audio/speech",
    "/chat/completions", "/embeddings", "/completions", "/responses",  # unversioned aliases
})
FILE_PATHS = frozenset({"/v1/files", "/files"})
# Multipart uploads of audio and images (ingress.routes.media); the JSON ones are inference.
MEDIA_PATHS = frozenset({
    "/v1/audio/transcriptions", "/v1/audio/translations", "/v1/images/edits",
    "/audio/transcriptions", "/audio/translations", "/images/edits",
})
# Multipart framing and the purpose field around a file of the largest size.
FORM_ROOM = 64 * 1024


@dataclass(frozen=True, slots=True)
class BodyLimits:
    inference: int = 8 * 1024 * 1024
    files: int = 200 * 1024 * 1024
    other: int = 1024 * 1024
    media: int = 25 * 1024 * 1024

    def for_path(self, path: str) -> tuple[int, str]:
        """The cap on a body sent to ``path``, and what to call it in the error."""
        if path in INFERENCE_PATHS:
            return self.inference, "request body"
        if path in FILE_PATHS:
            return self.files + FORM_ROOM, "file upload"
        if path in MEDIA_PATHS:
            return self.media + FORM_ROOM, "audio or image upload"
        return self.other, "request body"


class BodyTooLarge(ApiError):
    def __init__(self, limit: int, what: str) -> None:
        super().__init__(
            413, f"The {what} is larger than the {limit:,} bytes this gateway accepts on "
                 "this route.",
            code="request_too_large")


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit, what = self.limits.for_path(scope["path"])
        anthropic = speaks_anthropic(scope["path"])
        length = declared_length(scope)
        if length is not None and length > limit:
            await self._refuse(send, BodyTooLarge(limit, what), anthropic)
            return
        received = 0
        started = False
        refused: BodyTooLarge | None = None  # the cap was passed
        answered = False  # with our 413

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = BodyTooLarge(limit, what)
                    raise refused
            return message

        async def watched(message: Message) -> None:
            # A handler that caught the error (FastAPI turns a failed body read into a
            # 400 of its own) answers with the 413 all the same.
            nonlocal started, answered
            if refused is not None and not started:
                if not answered:
                    answered = True
                    await self._refuse(send, refused, anthropic)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # raised where no handler turned it into a response
            if started:
                raise
            if not answered:
                await self._refuse(send, exc, anthropic)
            return
        if refused is not None and not started and not answered:
            await self._refuse(send, refused, anthropic)

    @staticmethod
    async def _refuse(send: Send, error: ApiError, anthropic: bool = False) -> None:
        response = error.to_response(anthropic)
        # The rest of the body is not read: the connection cannot carry another request.
        response.headers["connection"] = "close"
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
