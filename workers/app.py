"""The worker process: a FastStream app serving one provider on its NATS queue group.

With ``AIGW_METRICS_PORT`` set it also serves ``/metrics`` and its health there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from decimal import Decimal

import nats.errors
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from nats.aio.client import Client
from nats.aio.msg import Msg

from core import heap, spool
from core.media_pricing import MediaPriceTable, deployment_cost
from core.media_store import MediaStore
from core.nats_servers import servers
from core.pricing import PriceTable
from core.publisher import UsagePublisher
from core.telemetry import tracing
from core.telemetry.process import PROCESS, count_reconnect
from core.telemetry.server import MetricsServer
from schemas import subjects
from schemas.attempt_usage import attempt_event
from schemas.bus_roles import WORKER
from schemas.config import Deployment, GatewayConfig
from schemas.frames import FrameKind, headers
from schemas.usage import TokenUsage
from workers import offload
from workers.attempt import FrameTooLarge, Outcome
from workers.attempt_inbox import AttemptInbox
from workers.batch.runner import BatchRunner
from workers.capacity import Capacity
from workers.config_follow import ConfigFollower
from workers.metrics import LOAD
from workers.providers import create_provider
from workers.service import WorkerService
from workers.settings import WorkerSettings
from workers.transport import upstream_client

log = logging.getLogger("aigw.worker")


async def _raw(msg: NatsMessage, original: object = None) -> NatsMessage:
    """The decoder: hand handlers the message itself (body bytes and reply subject)."""
    return msg


class Worker:
    """Everything one worker process owns, started and stopped together."""

    def __init__(
        self, settings: WorkerSettings, config: GatewayConfig,
    ) -> None:
        self.settings = settings
        self.provider_name = settings.provider
        # Per-message logging at INFO costs a fifth of the throughput: keep it at DEBUG.
        # No FastDepends either: it resolves message context through sync functions run in
        # a thread pool, four thread hops per attempt. Handlers take the raw message.
        self.broker = NatsBroker(
            servers(settings.nats_url),
            log_level=logging.DEBUG,
            apply_types=False,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            reconnected_cb=count_reconnect,
            # Stopping the attempt subscriber waits for running attempts this long (then
            # cancels them): the drain, not FastStream's own 15 s.
            graceful_timeout=settings.drain_seconds or None,
            **settings.bus.broker_options(WORKER),
        )
        self.client = upstream_client(settings.max_connections)
        self.prices = PriceTable.default()
        self.media_prices = MediaPriceTable.default()
        self.service = WorkerService(
            self.provider_name,
            create_provider(self.provider_name, self.client),
            config,
            self._publish,
            on_outcome=self._on_outcome,
            price=self._price,
        )
        # Hot reload: the config in NATS KV, when this worker was started with a file.
        self.follower = ConfigFollower(self.service, self.client, settings.config_key)
        self.service.refresh = self.follower.refresh
        self.gate = Capacity(settings.concurrency)
        self.batch = BatchRunner(self.provider_name, self.service, settings.concurrency,
                                 self.gate, admit=settings.batch_admission)
        self.usage: UsagePublisher | None = None
        self.nc: Client | None = None
        self._serving = False
        self._heartbeats: asyncio.Task[None] | None = None
        self.attempts = AttemptInbox(self._on_attempt, self.gate.handler_slots)
        self._register()

    # ---- what /metrics and /health/readiness read --------------------------------------

    @property
    def interactive(self) -> int:
        return max(0, self.service.in_flight - self.batch.calling)

    @property
    def capacity(self) -> int:
        return self.settings.concurrency

    @property
    def batch_running(self) -> int:
        return self.batch.running

    def ready(self) -> bool:
        """Subscribed and connected to NATS; not ready any more once draining."""
        return self._serving and self.nc is not None and self.nc.is_connected

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        if self.batch.takes(subject):  # a batch item's frames stay in the process
            self.batch.deliver(subject, body, headers)
            return
        connection = self.broker.connection
        try:
            await connection.publish(subject, body, headers=headers)
        except nats.errors.MaxPayloadError:
            raise FrameTooLarge(len(body), connection.max_payload) from None

    async def _refuse(self, reply: str) -> None:
        """Tell the ingress this worker is full: it did not start the attempt."""
        if reply:
            with contextlib.suppress(nats.errors.Error):
                await self.broker.connection.publish(reply, b"", headers=headers(FrameKind.BUSY, 1))

    def _price(self, deployment: Deployment, usage: TokenUsage) -> Decimal | None:
        if usage.media is not None:  # an images or audio call
            return deployment_cost(self.media_prices, deployment, usage, self.prices)
        return self.prices.cost(
            deployment.provider,
            deployment.upstream_model,
            usage,
            overrides=deployment.prices,
        )

    def _on_outcome(self, outcome: Outcome) -> None:
        if self.usage is None:
            return
        self.usage.submit(
            attempt_event(
                outcome.request,
                self.provider_name,
                outcome.deployment,
                outcome.usage,
                outcome.error,
                outcome.cancelled,
                outcome.latency_ms,
                outcome.ttft_ms,
                outcome.cost,
                self.prices.version,
            )
        )

    def _register(self) -> None:
        p = self.provider_name
        service = self.service

        @self.broker.subscriber(subjects.CANCEL_ALL, no_reply=True, decoder=_raw)
        async def on_cancel(msg: NatsMessage) -> None:
            service.cancel(subjects.cancel_request_id(msg.raw_message.subject))

        @self.broker.subscriber(subjects.ping(p), queue=subjects.worker_queue(p), decoder=_raw)
        async def on_ping(msg: NatsMessage) -> bytes:
            return str(service.in_flight).encode()

    async def _on_attempt(self, msg: Msg) -> None:
        service = self.service
        if not self.gate.admit(service.in_flight):
            await self._refuse(msg.reply)
            return
        if tracing.enabled:  # the ingress's trace context rides in the headers
            await service.handle(msg.data, msg.reply, msg.headers or {})
        else:
            await service.handle(msg.data, msg.reply)

    async def start(self) -> None:
        await self.broker.start()
        self.nc = self.broker.connection
        await self.attempts.start(self.nc, subjects.infer(self.provider_name),
                                  subjects.worker_queue(self.provider_name))
        self.service.media_store = MediaStore(self.broker.connection.jetstream())
        self.usage = UsagePublisher(
            self.broker.connection.jetstream(),
            spool=spool.claim(self.settings.spool_dir, f"worker-{self.provider_name}"))
        await self.usage.start()
        self._heartbeats = asyncio.create_task(self.service.heartbeat_forever())
        await self.batch.start(self.broker.connection)
        if self.settings.config_path is not None:
            await self.follower.start(self.broker.connection)
        self._serving = True
        log.info("worker for %s connected to %s", self.provider_name, self.settings.nats_url)

    async def stop(self) -> None:
        """Stop taking attempts, let running ones finish (up to the drain time), close."""
        self._serving = False
        deadline = asyncio.get_running_loop().time() + self.settings.drain_seconds
        await self.attempts.stop(deadline)
        for sub in self.broker.subscribers:
            with contextlib.suppress(Exception):
                await sub.stop()
        await self.batch.stop(deadline)
        while self.service.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if self._heartbeats is not None:
            self._heartbeats.cancel()
        await self.follower.stop()
        if self.usage is not None:
            await self.usage.stop()
        await self.broker.stop()
        await self.client.aclose()


async def run_worker(settings: WorkerSettings, config: GatewayConfig) -> None:
    worker = Worker(settings, config)
    PROCESS.connection = lambda: worker.nc
    PROCESS.publisher = lambda: worker.usage
    LOAD.worker = lambda: worker
    metrics: MetricsServer | None = None
    if settings.metrics_port > 0:  # up before NATS: liveliness answers while connecting
        metrics = MetricsServer(settings.metrics_port, settings.metrics_host,
                                ready=worker.ready, key=settings.metrics_key)
        await metrics.start()
    await worker.start()
    heap.settle()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    try:
        await asyncio.wait_for(worker.stop(), settings.drain_seconds + 5)
    except TimeoutError:
        log.warning("worker did not stop cleanly; exiting")
    finally:
        if metrics is not None:
            await metrics.stop()
    if offload.running:
        # A thread still decodes or builds an answer nobody waits for: exiting normally
        # would wait for it, past the drain deadline. Usage is published or spooled.
        log.warning("exiting with %d offloaded job(s) still running", offload.running)
        tracing.shutdown()
        logging.shutdown()
        os._exit(0)
