"""The accounting process: a FastStream app that owns ClickHouse.

It runs the migrations, the usage consumer (JetStream → ClickHouse) and the analytics
responders, and stops gracefully: the batch in hand is written and acked before exit.
With ``AIGW_METRICS_PORT`` set it serves ``/metrics`` and the health routes, and reads
the consumer's lag every ``AIGW_ACCOUNTING_LAG_INTERVAL`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from nats.aio.client import Client

from accounting import migrations, service
from accounting.audit_consumer import AuditConsumer
from accounting.audit_log import AuditStore
from accounting.consumer import UsageConsumer
from accounting.metrics import LagWatch
from accounting.settings import AccountingSettings
from accounting.store import UsageStore, connect
from core import heap
from core.nats_servers import servers
from core.telemetry.process import PROCESS, count_reconnect
from core.telemetry.server import MetricsServer
from schemas.bus_roles import ACCOUNTING

log = logging.getLogger("aigw.accounting")


class Accounting:
    """Everything one accounting process owns, started and stopped together."""

    def __init__(self, settings: AccountingSettings, store: Any = None) -> None:
        self.settings = settings
        # Per-message logging at INFO costs throughput: keep it at DEBUG.
        self.broker = NatsBroker(
            servers(settings.nats_url),
            log_level=logging.DEBUG,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            reconnected_cb=count_reconnect,
            **settings.bus.broker_options(ACCOUNTING),
        )
        self.nc: Client | None = None
        # Two handles on one store: an analytics query never waits behind an insert.
        self.ingest_client = connect(settings.clickhouse)
        self.query_client = connect(settings.clickhouse)
        migrations.apply(self.ingest_client, settings.ttl_days)
        # ``store`` lets a test stand a failing store in front of the real one.
        self.store = store if store is not None else UsageStore(self.ingest_client)
        self.consumer: UsageConsumer | None = None
        self.audit: AuditConsumer | None = None
        self.lag: LagWatch | None = None
        self.metrics: MetricsServer | None = None
        if settings.metrics_port > 0:
            self.metrics = MetricsServer(settings.metrics_port, settings.metrics_host,
                                         ready=self.ready, key=settings.metrics_key)
        self._register()

    def _register(self) -> None:
        client = self.query_client

        @self.broker.subscriber(service.ANALYTICS_ALL, queue=service.ANALYTICS_QUEUE)
        async def on_analytics(msg: NatsMessage) -> bytes:
            query = service.query_name(msg.raw_message.subject)
            return await asyncio.to_thread(service.answer, client, query, msg.body)

    def ready(self) -> bool:
        """Connected to NATS, consuming, and ClickHouse took the last insert."""
        return (self.nc is not None and self.nc.is_connected
                and self.consumer is not None and self.consumer.running
                and self.consumer.store_reachable)

    async def start(self) -> None:
        if self.metrics is not None:
            # First, so a port already taken stops the process before it connects.
            await self.metrics.start()
        await self.broker.start()
        self.nc = self.broker.connection
        PROCESS.connection = lambda: self.nc
        self.consumer = UsageConsumer(
            self.nc,
            self.store,
            batch_size=self.settings.batch_size,
            batch_age=self.settings.batch_age,
            retry_delay=self.settings.retry_delay,
            ack_wait=self.settings.ack_wait,
            stream_max_age=self.settings.stream_max_age_days * 86400,
        )
        await self.consumer.start()
        self.audit = AuditConsumer(self.nc, AuditStore(self.ingest_client),
                                   retry_delay=self.settings.retry_delay)
        await self.audit.start()
        self.lag = LagWatch(self.consumer.js, self.consumer.durable, self.settings.lag_interval)
        self.lag.start()
        log.info("accounting connected to %s, ClickHouse at %s",
                 self.settings.nats_url, self.settings.clickhouse)

    async def stop(self) -> None:
        if self.lag is not None:
            await self.lag.stop()
        if self.audit is not None:
            await self.audit.stop()
        if self.consumer is not None:
            await self.consumer.stop()
        await self.broker.stop()
        self.ingest_client.close()
        self.query_client.close()
        if self.metrics is not None:
            await self.metrics.stop()


STOP_SECONDS = 5.0


async def run_accounting(settings: AccountingSettings) -> None:
    """Run until SIGINT or SIGTERM, then finish the batch in hand and exit."""
    accounting = Accounting(settings)
    await accounting.start()
    heap.settle()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        try:
            await asyncio.wait_for(accounting.stop(), STOP_SECONDS)
        except TimeoutError:
            # NATS or ClickHouse gone (say, the parent ``aigw up`` died with them): leave
            # rather than hang; events not acked yet are redelivered and deduplicated.
            log.warning("accounting did not stop cleanly within %ss; exiting", STOP_SECONDS)
