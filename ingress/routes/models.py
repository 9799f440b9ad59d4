"""``GET /v1/models`` and ``GET /v1/models/{model}``: the aliases the caller may use."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ingress.auth.principal import allowed, visible_models
from ingress.deps import AuthedGateway, CurrentPrincipal
from ingress.errors import ApiError
from ingress.state import Gateway

router = APIRouter()


def _model(gateway: Gateway, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": gateway.started_at, "owned_by": "ai-gateway"}


@router.get("/models")
async def list_models(gateway: AuthedGateway, principal: CurrentPrincipal) -> dict[str, Any]:
    names = visible_models(principal, gateway.router.models)
    return {"object": "list", "data": [_model(gateway, m) for m in names]}


@router.get("/models/{model:path}")
async def get_model(
    model: str, gateway: AuthedGateway, principal: CurrentPrincipal
) -> dict[str, Any]:
    # A model the key may not use is "not found", as OpenAI says: its name is not revealed.
    if model not in gateway.router or not allowed(principal, model):
        raise ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                       code="model_not_found", param="model")
    return _model(gateway, model)
