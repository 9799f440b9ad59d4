"""``/v1/responses``: OpenAI's Responses API, answered through chat by every provider.

A request is translated to a chat request (:mod:`ingress.protocols.responses`) and runs as
chat runs (auth, limits, budget reservation and settlement, routing, fallbacks, one usage
event per upstream call, under the endpoint ``responses``); the answer, whole or streamed
(:mod:`ingress.protocols.responses_stream`), is translated back. A stored response keeps
its conversation in NATS KV (:mod:`ingress.response_store`), readable and continuable only
with the key that made it (and the master key).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from ingress.auth.principal import Principal
from ingress.deps import AuthedGateway
from ingress.dispatch import relay
from ingress.dispatch.execution import Started
from ingress.dispatch.hangup import HangUp
from ingress.errors import ApiError, invalid
from ingress.metrics import GenAI
from ingress.protocols import responses as protocol
from ingress.protocols.responses_stream import ResponseStream, encode
from ingress.response_store import ResponseStore, StoreUnavailable
from ingress.routes import upstream
from ingress.routes.body import read_body
from ingress.state import Gateway
from schemas import model_limits
from schemas.infer import Endpoint
from schemas.responses import ResponsesRequest, StoredResponse

router = APIRouter()

# Response headers of the chat answer that do not carry over to the translated one.
_BODY_HEADERS = frozenset({"content-length", "content-type"})


async def response_store(request: Request, gateway: AuthedGateway) -> ResponseStore:
    store: ResponseStore = request.app.state.response_store
    return store


StoreDep = Annotated[ResponseStore, Depends(response_store)]


def _not_found(response_id: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"Response with id '{response_id}' not found.", param=param,
                    code="response_not_found")


def _unavailable(exc: StoreUnavailable) -> ApiError:
    return ApiError(503, f"stored responses are unavailable right now ({exc}); try again",
                    type="server_error", code="store_unavailable",
                    headers={"retry-after": "1"})


def _may_see(principal: Principal, owner: str | None) -> bool:
    return principal.master or principal.key is None or owner == principal.key_id


async def _stored(store: ResponseStore, principal: Principal, response_id: str,
                  param: str | None = None) -> StoredResponse:
    """A stored response this caller may see; 404 for one it may not (as for none)."""
    try:
        record = await store.get(response_id)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None
    if record is None or not _may_see(principal, record.owner):
        raise _not_found(response_id, param)
    return record


def _carried(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}


class _Turn:
    """One request: what it continues, what it adds, and where its answer is kept."""

    def __init__(self, store: ResponseStore, principal: Principal, body: dict[str, Any],
                 history: list[dict[str, Any]], own: list[dict[str, Any]], keep: bool) -> None:
        self.store = store
        self.body = body
        self.principal = principal
        self.history = history
        self.own = own
        self.keep = keep

    async def save(self, response: dict[str, Any]) -> dict[str, Any]:
        """Store ``response`` when asked; the response as the client sees it (``store``
        false when it could not be kept)."""
        if not self.keep:
            return response
        record = StoredResponse(owner=self.principal.key_id, response=response,
                                context=[*self.history, *self.own],
                                input_start=len(self.history))
        if await self.store.put(response["id"], record):
            return response
        return {**response, "store": False}


@router.post("/responses")
async def create_response(request: Request, gateway: AuthedGateway,
                          store: StoreDep) -> Response:
    parsed, body = await read_body(request, ResponsesRequest)
    principal: Principal = request.state.principal
    history: list[dict[str, Any]] = []
    if parsed.previous_response_id is not None:
        previous = await _stored(store, principal, parsed.previous_response_id,
                                 "previous_response_id")
        history = previous.continuation
    try:
        own = protocol.input_items(parsed.input)
        chat = protocol.to_chat(body, parsed.model, [*history, *own])
    except protocol.Unsupported as exc:
        raise invalid(exc.message, param=exc.param) from None
    turn = _Turn(store, principal, body, history, own, keep=parsed.store is not False)
    base = protocol.shell(protocol.new_id("resp"), body, parsed.model)
    stream = bool(parsed.stream)
    if stream:  # a stream notices a departed client at its next write
        return await _respond(request, gateway, parsed.model, chat, base, turn, stream)
    hangup = HangUp(request.receive)
    try:
        return await _respond(request, gateway, parsed.model, chat, base, turn, stream)
    except asyncio.CancelledError:
        if not hangup.gone:
            raise
        raise hangup.absorb() from None
    finally:
        hangup.close()


async def _respond(request: Request, gateway: Gateway, model: str, chat: dict[str, Any],
                   base: dict[str, Any], turn: _Turn, stream: bool) -> Response:
    plan = upstream.plan_for(gateway, turn.principal, model, chat)
    try:
        model_limits.check(plan, chat, model)
    except model_limits.OverLimit as exc:
        raise invalid(str(exc), param=_param(exc.param)) from None
    genai = request.state.genai = GenAI(Endpoint.RESPONSES.value, model, stream=stream)
    started = await upstream.start(request, gateway, plan, model, chat, Endpoint.RESPONSES,
                                   stream, caller=upstream.caller_of(turn.principal, turn.body))
    genai.provider = started.deployment.provider
    settings = gateway.settings
    if stream:
        return _routed(started, _stream(started, settings.heartbeat_timeout, gateway, base,
                                        turn))
    answer = await relay.json_response(started, settings.heartbeat_timeout,
                                       gateway.gatekeeper.settle)
    completion = json.loads(bytes(answer.body))
    response = await turn.save(protocol.from_chat(base, completion))
    return _routed(started, Response(json.dumps(response, separators=(",", ":")).encode(),
                                     media_type="application/json",
                                     headers=_carried(answer.headers)))


R = TypeVar("R", bound=Response)


def _routed(started: Started, response: R) -> R:
    """``response`` with the complexity router's tier and reason, when it chose one."""
    if started.route is not None:
        response.headers.update(started.route.headers())
    return response


def _param(param: str | None) -> str | None:
    """A chat parameter named in an error, as the Responses request names it."""
    return {"max_completion_tokens": "max_output_tokens", "max_tokens": "max_output_tokens",
            "messages": "input"}.get(param or "", param)


def _stream(started: Started, timeout: float, gateway: Gateway, base: dict[str, Any],
            turn: _Turn) -> StreamingResponse:
    chat = relay.stream_response(started, True, timeout, gateway.gatekeeper.settle)
    return StreamingResponse(_events(chat.body_iterator, ResponseStream(base), turn),
                             media_type="text/event-stream", headers=_carried(chat.headers))


async def _events(chat: Any, translator: ResponseStream, turn: _Turn) -> AsyncIterator[bytes]:
    """The chat stream's SSE (relayed, usage last) as Responses events. Closing this
    closes the chat stream, which stops the upstream call when the client has gone."""
    usage: dict[str, Any] | None = None
    try:
        yield b"".join(encode(e) for e in translator.start())
        async for block in chat:
            out: list[bytes] = []
            for line in bytes(block).split(b"\n\n"):
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if isinstance(data.get("error"), dict):
                    out += [encode(e) for e in translator.fail(data["error"])]
                    yield b"".join(out)
                    return
                if data.get("usage") is not None and not data.get("choices"):
                    usage = data["usage"]
                else:
                    out += [encode(e) for e in translator.chunk(data)]
            if out:
                yield b"".join(out)
        events = translator.finish(usage)
        final = await turn.save(translator.response)
        events[-1]["response"] = final
        yield b"".join(encode(e) for e in events)
    finally:
        await chat.aclose()


@router.get("/responses/{response_id}")
async def get_response(request: Request, response_id: str, store: StoreDep) -> Response:
    record = await _stored(store, request.state.principal, response_id)
    return Response(json.dumps(record.response, separators=(",", ":")).encode(),
                    media_type="application/json")


@router.delete("/responses/{response_id}")
async def delete_response(request: Request, response_id: str,
                          store: StoreDep) -> dict[str, Any]:
    await _stored(store, request.state.principal, response_id)
    try:
        await store.delete(response_id)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    request: Request, response_id: str, store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    record = await _stored(store, request.state.principal, response_id)
    items = record.own_input
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return {"object": "list", "data": page,
            "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": len(items) > limit}
