"""``GET /v1/models`` and ``GET /v1/models/{model}``: the aliases, in OpenAI's list shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ingress.deps import AuthedGateway
from ingress.errors import ApiError
from ingress.state import Gateway

router = APIRouter()


def _model(gateway: Gateway, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": gateway.started_at, "owned_by": "ai-gateway"}


@router.get("/models")
async def list_models(gateway: AuthedGateway) -> dict[str, Any]:
    return {"object": "list", "data": [_model(gateway, m) for m in gateway.router.models]}


@router.get("/models/{model:path}")
async def get_model(model: str, gateway: AuthedGateway) -> dict[str, Any]:
    if model not in gateway.router:
        raise ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                       code="model_not_found", param="model")
    return _model(gateway, model)
