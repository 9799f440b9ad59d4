"""Running one attempt: resolve the deployment, call the provider, send frames back.

The NATS wiring (which subject, which queue group) lives in ``workers.app``; this module
only needs something that can publish bytes with headers to a subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from pydantic import ValidationError

from core.json_codec import dumps
from core.media_store import MediaStore
from core.telemetry import tracing
from schemas import estimate
from schemas.config import Deployment, GatewayConfig
from schemas.errors import ErrorInfo, ErrorKind
from schemas.frames import DoneFrame, ErrorFrame, FrameKind, headers
from schemas.infer import Endpoint, InferRequest
from schemas.media import MEDIA_ENDPOINTS
from schemas.usage import TokenUsage
from workers import media, spans
from workers.arrivals import arrivals, chunk_frames
from workers.attempt import Attempt, FrameTooLarge, Outcome, Pricer, Publish, no_price, ttft
from workers.metrics import UpstreamCalls, call_status
from workers.offload import off_loop
from workers.protocols.messages import run as messages_run
from workers.providers.base import (
    Completion,
    Moderator,
    Provider,
    Reranker,
    StreamItem,
    TextCompleter,
    UpstreamCall,
    UpstreamError,
    unsupported,
)
from workers.redact import redact

log = logging.getLogger("aigw.worker")

# The endpoints whose answers stream chunk by chunk.
_STREAMED = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES})


class WorkerService:
    def __init__(
        self,
        provider_name: str,
        provider: Provider,
        config: GatewayConfig,
        publish: Publish,
        on_outcome: Callable[[Outcome], None] | None = None,
        price: Pricer = no_price,
    ) -> None:
        self._price = price
        self.provider_name = provider_name
        self._provider = provider
        self.config = config
        # The config before the last reload: an ingress that has not applied the new one
        # yet (or retries a plan it made before) still names its deployments.
        self._previous: GatewayConfig | None = None
        # Called when an attempt names a deployment no config here knows: a reload this
        # worker has not seen yet may (workers/config_follow.py).
        self.refresh: Callable[[], Awaitable[None]] | None = None
        self._publish = publish
        self._on_outcome = on_outcome
        self._running: dict[str, Attempt] = {}
        self._calls = UpstreamCalls(provider_name)
        # Uploads and large answers of images and audio calls (workers/media.py).
        self.media_store: MediaStore | None = None

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def apply(self, config: GatewayConfig, provider: Provider | None = None) -> None:
        """Serve ``config`` (and ``provider``, an adapter with no per-deployment state from
        the old config) from the next attempt on; running attempts keep what they hold."""
        self._previous, self.config = self.config, config
        if provider is not None:
            self._provider = provider

    def _resolve(self, deployment_id: str) -> Deployment | None:
        found = self.config.deployment(deployment_id)
        if found is None and self._previous is not None:
            found = self._previous.deployment(deployment_id)
        return found

    async def _send(self, attempt: Attempt, kind: FrameKind, body: bytes) -> None:
        # Numbered before the publish, which may yield to the heartbeat loop: two frames
        # must never share a number. The ingress reads a gap as frames lost in transit.
        attempt.seq += 1
        attempt.last_sent = time.monotonic()
        try:
            await self._publish(attempt.reply, body, headers(kind, attempt.seq))
        except FrameTooLarge:
            attempt.seq -= 1  # refused before anything was sent (or could interleave)
            raise

    async def handle(self, data: bytes, reply: str,
                     trace_headers: Mapping[str, str] | None = None) -> None:
        """Run one attempt published by an ingress. Never raises for the caller. While
        tracing, its span continues the trace in ``trace_headers`` (the message's headers),
        or the current one when there are none (a batch item's)."""
        if not reply:
            log.warning("dropping an attempt with no reply subject")
            return
        try:
            request = InferRequest.model_validate_json(data)
        except ValidationError as exc:
            info = ErrorInfo.of(ErrorKind.SERVER, f"worker could not read the attempt: {exc}")
            await self._publish(
                reply, ErrorFrame(error=info).model_dump_json().encode(),
                headers(FrameKind.ERROR, 1),
            )
            return
        attempt = Attempt(request=request, reply=reply)
        # Heard from at once, before the upstream is called: an ingress that never hears
        # from an attempt knows no call was made for it (ingress.dispatch.lost).
        with contextlib.suppress(Exception):
            await self._send(attempt, FrameKind.HEARTBEAT, b"")
        if tracing.enabled:
            attempt.span, run_in = spans.begin_attempt(request, trace_headers,
                                                       self.provider_name)
            if tracing.content and request.stream:
                attempt.text = []
            task = asyncio.create_task(self._run(attempt), context=run_in)
        else:
            task = asyncio.create_task(self._run(attempt))
        attempt.task = task
        self._running[request.request_id] = attempt
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                task.cancel()
                raise
        finally:
            self._running.pop(request.request_id, None)

    def cancel(self, request_id: str) -> bool:
        """Abandon a running attempt (its client went away); True if it ran here."""
        attempt = self._running.get(request_id)
        if attempt is None or attempt.task is None:
            return False
        attempt.task.cancel()
        return True

    def report_lost(self, request: InferRequest, usage: TokenUsage, error: ErrorInfo) -> None:
        """Account an attempt whose worker died before it could (a batch item's earlier
        delivery): ``usage`` as the caller estimated it, priced as this worker prices calls."""
        if self._on_outcome is None:
            return
        deployment = self._resolve(request.deployment_id)
        cost = self._price(deployment, usage) if deployment is not None else None
        self._on_outcome(Outcome(request=request, deployment=deployment, usage=usage,
                                 error=error, cancelled=False, latency_ms=0.0, ttft_ms=None,
                                 cost=cost))

    async def heartbeat_once(self) -> None:
        now = time.monotonic()
        for attempt in list(self._running.values()):
            if now - attempt.last_sent >= attempt.request.heartbeat_interval:
                with contextlib.suppress(Exception):
                    await self._send(attempt, FrameKind.HEARTBEAT, b"")

    async def heartbeat_forever(self, tick: float = 0.25) -> None:
        while True:
            await asyncio.sleep(tick)
            await self.heartbeat_once()

    async def _run(self, attempt: Attempt) -> None:
        request = attempt.request
        deployment = self._resolve(request.deployment_id)
        error: ErrorInfo | None = None
        cancelled = False
        call: UpstreamCall | None = None
        try:
            if deployment is None and self.refresh is not None:
                await self.refresh()
                deployment = self._resolve(request.deployment_id)
            if deployment is None:
                raise UpstreamError(
                    ErrorInfo.of(
                        ErrorKind.SERVER,
                        f"this worker does not serve deployment {request.deployment_id}",
                    )
                )
            call = UpstreamCall(
                deployment=deployment,
                body={**request.body, "model": deployment.upstream_model},
                request_id=request.request_id,
                headers=request.headers,
            )
            if attempt.span is not None:
                spans.calling(attempt.span, request, deployment)
            if request.endpoint is Endpoint.MESSAGES:
                await messages_run.run(self, attempt, call)
            elif request.endpoint in MEDIA_ENDPOINTS:
                await media.run(self, attempt, call)
            elif request.stream and request.endpoint in _STREAMED:
                await self._stream(attempt, call)
            else:
                await self._complete(attempt, call)
        except UpstreamError as exc:
            error = exc.info
            self._estimate_cut_stream(attempt)
            await self._fail(attempt, error)
        except FrameTooLarge as exc:
            # Not a failover: another deployment's answer would be as large, and paid for.
            error = ErrorInfo.of(
                ErrorKind.INVALID_REQUEST,
                f"The answer ({exc.size:,} bytes) is larger than the {exc.limit:,} bytes a "
                "message may carry on this gateway's NATS (its max_payload setting); ask "
                "for less at a time (fewer inputs, fewer choices).",
                code="response_too_large", status=400,
            )
            self._estimate_cut_stream(attempt)  # a chunk too large ends a paid stream
            await self._fail(attempt, error)
        except asyncio.CancelledError:
            cancelled = True
            self._estimate_cut_stream(attempt)
            await self._fail(attempt, ErrorInfo.of(ErrorKind.CANCELLED, "cancelled by the client"))
        except Exception:
            log.exception("attempt %s failed inside the worker", request.request_id)
            error = ErrorInfo.of(ErrorKind.SERVER, "the worker failed while handling the request")
            await self._fail(attempt, error)
        finally:
            latency = time.monotonic() - attempt.started
            if call is not None and (status := call_status(error, cancelled)) is not None:
                self._calls.record(status, latency)
            if self._on_outcome is not None:
                self._on_outcome(
                    Outcome(
                        request=request,
                        deployment=deployment,
                        usage=attempt.usage,
                        error=error,
                        cancelled=cancelled,
                        latency_ms=latency * 1000,
                        ttft_ms=ttft(attempt),
                        cost=attempt.cost,
                    )
                )
            if attempt.span is not None:
                spans.end_attempt(attempt.span, attempt.usage, attempt.cost, error, cancelled,
                                  attempt.text)

    def _text_completer(self) -> TextCompleter:
        if isinstance(self._provider, TextCompleter):
            return self._provider
        raise UpstreamError(ErrorInfo.of(
            ErrorKind.INVALID_REQUEST,
            f"{self.provider_name} deployments do not serve legacy text completions "
            "(/v1/completions); use /v1/chat/completions with this model.",
            code="unsupported_endpoint", status=400, provider=self.provider_name,
        ))

    def _settle(self, attempt: Attempt, call: UpstreamCall, usage: TokenUsage) -> None:
        attempt.usage = usage
        attempt.cost = self._price(call.deployment, usage)

    def _estimate_cut_stream(self, attempt: Attempt) -> None:
        """A stream that sent content and then broke off never got its final usage; the
        provider bills it all the same, so account an estimate rather than nothing."""
        call = attempt.call
        if call is None or not attempt.chunks:
            return
        usage = estimate.cut_stream(attempt.usage, call.body, attempt.output_chars,
                                    attempt.text_chunks)
        self._settle(attempt, call, usage)

    async def _fail(self, attempt: Attempt, error: ErrorInfo) -> None:
        key = attempt.call.deployment.api_key if attempt.call is not None else None
        message = redact(error.message, [key.get_secret_value()] if key else [])
        if message != error.message:
            error = error.model_copy(update={"message": message})
        frame = ErrorFrame(
            error=error, chunks_sent=attempt.chunks, usage=attempt.usage, cost=attempt.cost
        )
        with contextlib.suppress(Exception):
            await self._send(attempt, FrameKind.ERROR, frame.model_dump_json().encode())

    async def _complete(self, attempt: Attempt, call: UpstreamCall) -> None:
        result: Completion
        if attempt.request.endpoint is Endpoint.EMBEDDINGS:
            result = await self._provider.embed(call)
        elif attempt.request.endpoint is Endpoint.COMPLETIONS:
            result = await self._text_completer().complete_text(call)
        elif attempt.request.endpoint is Endpoint.RERANK:
            if not isinstance(self._provider, Reranker):
                raise unsupported(self.provider_name, "/v1/rerank")
            result = await self._provider.rerank(call)
        elif attempt.request.endpoint is Endpoint.MODERATIONS:
            if not isinstance(self._provider, Moderator):
                raise unsupported(self.provider_name, "/v1/moderations")
            result = await self._provider.moderate(call)
        else:
            result = await self._provider.complete(call)
        attempt.first_chunk_at = time.monotonic()
        if attempt.span is not None:
            spans.answered(attempt.span, result.response)
        self._settle(attempt, call, result.usage)
        finish = None
        choices = result.response.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            finish = choices[0].get("finish_reason")
        done = DoneFrame(
            usage=result.usage,
            finish_reason=finish,
            response=result.response,
            upstream_model=call.deployment.upstream_model,
            latency_ms=(time.monotonic() - attempt.started) * 1000,
            ttft_ms=ttft(attempt),
            cost=attempt.cost,
        )
        if attempt.request.endpoint is Endpoint.EMBEDDINGS:
            # Vectors run to megabytes of JSON: encoded off the event loop.
            body = (await off_loop(done.model_dump_json)).encode()
        else:
            body = done.model_dump_json().encode()
        await self._send(attempt, FrameKind.DONE, body)

    async def _stream(self, attempt: Attempt, call: UpstreamCall) -> None:
        finish: str | None = None
        self._settle(attempt, call, TokenUsage())
        attempt.call = call
        items: AsyncIterator[StreamItem]
        if attempt.request.endpoint is Endpoint.COMPLETIONS:
            items = self._text_completer().stream_text(call)
        else:
            items = self._provider.stream(call)
        # Chunks that arrived together leave in one frame (workers.arrivals); closed on
        # the way out, so that a cancelled attempt stops the upstream stream at once.
        async with contextlib.aclosing(arrivals(items)) as groups:
            async for group in groups:
                bodies: list[bytes] = []
                for item in group:
                    if isinstance(item, TokenUsage):
                        self._settle(attempt, call, item)
                        continue
                    if attempt.first_chunk_at is None:
                        attempt.first_chunk_at = time.monotonic()
                        if attempt.span is not None:
                            spans.answered(attempt.span, item)
                    if attempt.text is not None:
                        spans.collect_text(attempt.text, item)
                    for choice in item.get("choices") or ():
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                    attempt.chunks += 1
                    chars = estimate.chunk_chars(item)
                    if chars:
                        attempt.output_chars += chars
                        attempt.text_chunks += 1
                    bodies.append(dumps(item))
                for kind, body in chunk_frames(bodies):
                    await self._send(attempt, kind, body)
        done = DoneFrame(
            usage=attempt.usage or TokenUsage(),
            finish_reason=finish,
            upstream_model=call.deployment.upstream_model,
            latency_ms=(time.monotonic() - attempt.started) * 1000,
            ttft_ms=ttft(attempt),
            cost=attempt.cost,
        )
        attempt.call = None  # complete: the provider's own figures stand
        await self._send(attempt, FrameKind.DONE, done.model_dump_json().encode())
