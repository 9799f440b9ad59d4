"""FastAPI dependencies, as ``Annotated`` aliases the routes declare."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ingress.auth.principal import Principal
from ingress.state import Gateway


# Dependencies are ``async def``: FastAPI runs plain ``def`` ones in a thread pool, which
# costs more than everything else a request does here.
async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def authenticated(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    request.state.principal = gateway.auth.check(request)
    return gateway


async def current_principal(request: Request, gateway: AuthedGateway) -> Principal:
    principal: Principal = request.state.principal
    return principal


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
AuthedGateway = Annotated[Gateway, Depends(authenticated)]
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def request_id(request: Request) -> str:
    rid: str = request.scope["state"]["request_id"]
    return rid
