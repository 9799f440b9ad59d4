"""The ingress ASGI app: ``create_app(settings, config)``."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import nats
import nats.errors
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from starlette.types import ASGIApp

from core import heap, spool
from core.audit_publisher import SPOOL_NAME as AUDIT_SPOOL
from core.audit_publisher import AuditPublisher
from core.batch_store import BatchStore
from core.nats_servers import servers
from core.periodic import Periodic
from core.pricing import PriceTable
from core.publisher import UsagePublisher
from core.telemetry.process import PROCESS, count_reconnect
from ingress import errors
from ingress.admission import (
    Admission,
    LocalAdmission,
    RedisAdmission,
    ResilientAdmission,
    spend_seed,
)
from ingress.admission.alerts import BudgetAlerts
from ingress.admission.budget_watch import BudgetWatch
from ingress.admission.gatekeeper import Gatekeeper
from ingress.admission.redis_impl import connect as connect_redis
from ingress.audit import AuditTrail
from ingress.auth.authenticate import Authenticator
from ingress.auth.keys import KeyStore
from ingress.batch.admission import BatchAdmission
from ingress.batch.file_sweep import sweep_expired
from ingress.batch.finalizer import Finalizer
from ingress.body_limit import BodyLimitMiddleware, BodyLimits
from ingress.cache.dedup import InFlight
from ingress.cache.dedup_shared import SharedLeads
from ingress.cache.semantic import SemanticCache
from ingress.cache.semantic_store import SemanticStore
from ingress.cache.store import MemoryCache, RedisCache, ResponseCache
from ingress.config.reload import reloader_for
from ingress.console import routes as console
from ingress.console.sessions import SessionStore
from ingress.direct_routes import DirectRoutes
from ingress.dispatch import relay
from ingress.dispatch.dispatcher import Dispatcher
from ingress.dispatch.health_probe import HealthProbe
from ingress.metrics import INGRESS, ProviderWatch
from ingress.middleware import ObserveMiddleware, RequestIdMiddleware, RootPathMiddleware
from ingress.response_store import ResponseStore
from ingress.routes import (
    admin,
    api_docs,
    batches,
    files,
    health,
    inference,
    media,
    messages,
    metrics,
    models,
    responses,
    usage,
)
from ingress.routing.health_board import HealthBoard
from ingress.routing.load import LoadTracker
from ingress.routing.router import Router
from ingress.settings import IngressSettings
from ingress.state import Gateway
from schemas import bus_roles
from schemas.config import GatewayConfig
from schemas.health import ProcessStatus

log = logging.getLogger("aigw.ingress")


async def _admission(settings: IngressSettings, stack: AsyncExitStack) -> Admission:
    if settings.redis_url is None:
        return LocalAdmission()
    client = connect_redis(settings.redis_url)
    stack.push_async_callback(client.aclose)
    store = RedisAdmission(client)
    stack.push_async_callback(store.aclose)
    try:
        await store.load()
    except Exception as exc:
        log.warning("redis at start-up: %s (limits follow AIGW_ON_REDIS_ERROR=%s)",
                    exc, settings.on_redis_error)
    return ResilientAdmission(store, LocalAdmission(), settings.on_redis_error)


async def _seed_spend(
    nc: NatsClient, admission: Admission, every: float, stack: AsyncExitStack
) -> None:
    """Spend counters from ClickHouse before serving (when accounting answers), then kept
    up with it in the background."""
    try:
        await spend_seed.seed_once(nc, admission, timeout=2.0)
    except Exception as exc:
        log.info("spend counters not seeded yet (%s); retrying in the background", exc)
    task = asyncio.create_task(spend_seed.keep_seeded(nc, admission, every))
    stack.callback(task.cancel)


async def _router(
    nc: NatsClient, settings: IngressSettings, config: GatewayConfig, prices: PriceTable,
    stack: AsyncExitStack,
) -> Router:
    """Deployment health from NATS KV and load shared through Redis (when set)."""
    health = HealthBoard(nc, config.router)
    await health.start()
    stack.push_async_callback(health.stop)
    redis = None
    if settings.redis_url is not None:
        redis = connect_redis(settings.redis_url)
        stack.push_async_callback(redis.aclose)
    load = LoadTracker(redis)
    load.start(d.id for d in config.deployments)
    stack.push_async_callback(load.stop)
    return Router(config, health=health, load=load, prices=prices)


def _cache(settings: IngressSettings, stack: AsyncExitStack) -> ResponseCache:
    """The response cache: in Redis when there is one, shared by every replica."""
    if settings.redis_url is None:
        cache = ResponseCache(MemoryCache(settings.cache_max_entries))
    else:
        client = connect_redis(settings.redis_url)
        stack.push_async_callback(client.aclose)
        # ``cache_params.type: local`` in the config picks the in-process store instead.
        cache = ResponseCache(RedisCache(client),
                              local=MemoryCache(settings.cache_max_entries))
    stack.push_async_callback(cache.drain)  # before the client closes (callbacks run LIFO)
    return cache


async def _semantic(settings: IngressSettings, nc: NatsClient,
                    stack: AsyncExitStack) -> SemanticCache:
    """The semantic cache's shared entries, followed from NATS KV whether or not the config
    uses them yet (a reload can turn it on); without the bucket, it stays off."""
    store = SemanticStore(nc, bound=1000, max_age=settings.cache_max_ttl)
    try:
        await store.start()
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        log.warning("semantic cache unavailable (%s): its bucket could not be opened", exc)
        return SemanticCache()
    stack.push_async_callback(store.stop)
    return SemanticCache(store)


async def _audit_trail(
    settings: IngressSettings, nc: NatsClient, stack: AsyncExitStack
) -> AuditTrail:
    """Admin actions to the audit stream, through a spool of their own."""
    publisher = AuditPublisher(nc.jetstream(), spool=spool.claim(settings.spool_dir,
                                                                   AUDIT_SPOOL))
    await publisher.start()
    stack.push_async_callback(publisher.stop)
    return AuditTrail(publisher, settings.config_key)


def _shared_leads(
    settings: IngressSettings, nc: NatsClient, stack: AsyncExitStack
) -> SharedLeads | None:
    """In-flight dedup across replicas, when they share a Redis cache."""
    if settings.redis_url is None or not settings.cache_dedup:
        return None
    client = connect_redis(settings.redis_url)
    stack.push_async_callback(client.aclose)
    return SharedLeads(client, nc, settings.cache_dedup_wait)


def _observe(gateway: Gateway) -> tuple[ProviderWatch, BudgetWatch]:
    """Scrapes read this replica's live state; watches keep provider readiness and team
    budget use fresh."""
    INGRESS.gateway = lambda: gateway
    PROCESS.connection = lambda: gateway.nc
    PROCESS.publisher = lambda: gateway.usage
    providers = ProviderWatch(gateway)
    budgets = BudgetWatch(gateway.gatekeeper.admission, gateway.keys.list_teams,
                          INGRESS.set_budget_ratios, gateway.settings.budget_metrics_interval)
    providers.start()
    budgets.start()
    return providers, budgets


def _no_framework_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry (0.16x) would add a second server span per request and
    record validation errors with their input, prompts included: the gateway's own spans
    (ingress/spans.py) carry what is needed and nothing more."""
    if "telemetry" not in inspect.signature(FastAPI).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False,
                          "operation_spans": False}}


def create_app(settings: IngressSettings, config: GatewayConfig,
               processes: ProcessStatus | None = None) -> ASGIApp:
    """The ingress. ``processes``, given by ``aigw up``, tells the readiness probe how the
    processes it supervises are doing."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            nc = await nats.connect(
                servers(settings.nats_url),
                name="aigw-ingress",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                reconnected_cb=count_reconnect,
                **settings.bus.connect_options(bus_roles.INGRESS),
            )

            async def close_nats() -> None:
                try:
                    await nc.drain()
                except (nats.errors.Error, OSError):
                    await nc.close()

            stack.push_async_callback(close_nats)
            dispatcher = Dispatcher(nc, settings.capacity_wait, settings.stream_buffer_bytes)
            await dispatcher.start()
            keys = KeyStore(nc)
            await keys.start()
            stack.push_async_callback(keys.stop)
            publisher = UsagePublisher(nc.jetstream(),
                                       spool=spool.claim(settings.spool_dir, "ingress"))
            await publisher.start()
            stack.push_async_callback(publisher.stop)
            app.state.audit = await _audit_trail(settings, nc, stack)
            alerts = BudgetAlerts(settings.budget_webhook_url)
            stack.push_async_callback(alerts.aclose)
            prices = PriceTable.default()
            gatekeeper = Gatekeeper(
                await _admission(settings, stack), prices, alerts,
                settings.default_max_output_tokens,
            )
            stack.push_async_callback(gatekeeper.drain)
            stack.push_async_callback(relay.drain)
            await _seed_spend(nc, gatekeeper.admission, settings.spend_seed_interval, stack)
            master = config.master_key.get_secret_value() if config.master_key else None
            app.state.gateway = Gateway(
                settings=settings,
                config=config,
                nc=nc,
                dispatcher=dispatcher,
                router=await _router(nc, settings, config, prices, stack),
                auth=Authenticator(master, keys),
                keys=keys,
                gatekeeper=gatekeeper,
                usage=publisher,
                cache=_cache(settings, stack),
                inflight=InFlight(settings.cache_dedup_wait),
                shared_leads=_shared_leads(settings, nc, stack),
                semantic=await _semantic(settings, nc, stack),
            )
            reloader = reloader_for(app.state.gateway)
            if reloader is not None:
                await reloader.start()
                stack.push_async_callback(reloader.stop)
            app.state.config_reloader = reloader
            if reloader is not None:
                reloader.on_signal_reload = app.state.audit.reload_by_signal
            # Always running: it reads the config each tick, so a reload can turn it on.
            probe = HealthProbe(app.state.gateway)
            probe.start()
            stack.push_async_callback(probe.stop)
            for watch in _observe(app.state.gateway):
                stack.push_async_callback(watch.stop)
            app.state.batch_store = BatchStore(nc)
            await app.state.batch_store.start()
            stack.push_async_callback(app.state.batch_store.stop)
            finalizer = Finalizer(app.state.batch_store, missing_for=INGRESS.missing_for,
                                  no_worker_after=settings.batch_no_worker_seconds or None)
            INGRESS.stranded_batches = lambda: finalizer.stranded
            finalizer.start()
            stack.push_async_callback(finalizer.stop)
            store = app.state.batch_store
            sweep = Periodic(lambda: sweep_expired(store), settings.files_sweep_seconds,
                             "file sweep")
            sweep.start()
            stack.push_async_callback(sweep.stop)
            app.state.response_store = ResponseStore(nc, settings.responses_ttl)
            await app.state.response_store.start()
            batch_admission = BatchAdmission(app.state.gateway, store)
            await batch_admission.start()
            stack.push_async_callback(batch_admission.stop)
            app.state.console_sessions = SessionStore(nc.jetstream(),
                                                      settings.console_session_seconds)
            heap.settle()
            yield

    app = FastAPI(title="ai-gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None,
                  **_no_framework_telemetry())
    app.state.processes = processes
    errors.install(app)
    openai_api = [(prefix, module.router) for prefix in ("/v1", "")
                  for module in (inference, messages, responses, models, usage, files,
                                 batches, media)]
    for prefix, router in openai_api:
        app.include_router(router, prefix=prefix)
    app.include_router(admin.router, prefix="/admin")
    app.include_router(console.router)
    console.install(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(api_docs.router)
    limits = BodyLimits(inference=settings.max_request_bytes, files=settings.max_file_bytes,
                        other=settings.max_other_bytes, media=settings.max_media_bytes)
    direct = DirectRoutes(app, openai_api)
    wrapped: ASGIApp = ObserveMiddleware(
        RequestIdMiddleware(BodyLimitMiddleware(direct, limits)), settings.access_log)
    if settings.server_root_path:
        wrapped = RootPathMiddleware(wrapped, settings.server_root_path)
    return wrapped
