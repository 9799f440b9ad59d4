"""Which routes the ingress serves past FastAPI's stack, and that they answer as FastAPI
would: the same dependencies, the same error JSON, and everything else left to FastAPI."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from ingress import errors
from ingress.direct_routes import DirectRoutes, eligible, table
from ingress.errors import ApiError
from ingress.routes import batches, files, inference, messages


async def _who(request: Request) -> str:
    header = request.headers.get("authorization")
    if header != "Bearer ok":
        raise ApiError(401, "no key", type="authentication_error", code="invalid_api_key")
    return "caller"


Who = Annotated[str, Depends(_who)]
router = APIRouter()


@router.post("/plain")
async def plain(request: Request, who: Who) -> Response:
    body = await request.json()
    if body.get("boom"):
        raise RuntimeError("a bug")
    return JSONResponse({"who": who, "echo": body, "route": request.scope["route"].path})


@router.post("/query")
async def with_query(request: Request, who: Who, n: Annotated[int, Query()] = 1) -> Response:
    return JSONResponse({"n": n})


@router.post("/items/{item}")
async def with_path(item: str) -> Response:
    return JSONResponse({"item": item})


def _app() -> DirectRoutes:
    app = FastAPI()
    errors.install(app)
    app.include_router(router, prefix="/v1")
    return DirectRoutes(app, [("/v1", router)])


def test_only_routes_that_need_nothing_from_fastapi_are_served_directly() -> None:
    assert _app().paths == frozenset({"/v1/plain"})
    served = table([("/v1", module.router) for module in (inference, messages, files, batches)])
    assert {"/v1/chat/completions", "/v1/embeddings", "/v1/messages"} <= set(served)
    assert "/v1/files" not in served  # a form FastAPI parses
    assert all(eligible(r) is None for r in router.routes if r.path != "/plain")  # type: ignore[attr-defined]


async def test_a_direct_route_answers_as_fastapi_would() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.post("/v1/plain", json={"a": 1}, headers={"authorization": "Bearer ok"})
        assert ok.json() == {"who": "caller", "echo": {"a": 1}, "route": "/plain"}
        refused = await client.post("/v1/plain", json={})
        assert refused.status_code == 401
        assert refused.json() == {"error": {"message": "no key", "type": "authentication_error",
                                            "param": None, "code": "invalid_api_key"}}
        broken = await client.post("/v1/plain", json={"boom": True},
                                   headers={"authorization": "Bearer ok"})
        assert broken.status_code == 500
        assert broken.json()["error"]["code"] == "internal_error"
        # Everything else still goes through FastAPI: parameters, and wrong methods.
        assert (await client.post("/v1/query?n=3",
                                  headers={"authorization": "Bearer ok"})).json() == {"n": 3}
        assert (await client.post("/v1/items/x")).json() == {"item": "x"}
        wrong = await client.get("/v1/plain")
        assert wrong.status_code == 405
        assert wrong.json()["error"]["code"] == "method_not_allowed"
