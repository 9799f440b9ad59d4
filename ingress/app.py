"""The ingress ASGI app: ``create_app(settings, config)``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
import nats.errors
from fastapi import FastAPI
from starlette.types import ASGIApp

from ingress import errors
from ingress.auth import Authenticator
from ingress.dispatch import Dispatcher
from ingress.middleware import RequestIdMiddleware, RootPathMiddleware
from ingress.routes import health, inference, models
from ingress.routing import Router
from ingress.settings import IngressSettings
from ingress.state import Gateway
from schemas.config import GatewayConfig

log = logging.getLogger("aigw.ingress")


def create_app(settings: IngressSettings, config: GatewayConfig) -> ASGIApp:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nc = await nats.connect(
            settings.nats_url,
            name="aigw-ingress",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
        )
        dispatcher = Dispatcher(nc)
        await dispatcher.start()
        master = config.master_key.get_secret_value() if config.master_key else None
        app.state.gateway = Gateway(
            settings=settings,
            config=config,
            nc=nc,
            dispatcher=dispatcher,
            router=Router(config),
            auth=Authenticator(master),
        )
        try:
            yield
        finally:
            try:
                await nc.drain()
            except (nats.errors.Error, OSError):
                await nc.close()

    app = FastAPI(title="ai-gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    errors.install(app)
    for prefix in ("/v1", ""):
        app.include_router(inference.router, prefix=prefix)
        app.include_router(models.router, prefix=prefix)
    app.include_router(health.router)
    wrapped: ASGIApp = RequestIdMiddleware(app)
    if settings.server_root_path:
        wrapped = RootPathMiddleware(wrapped, settings.server_root_path)
    return wrapped
