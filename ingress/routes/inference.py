"""``POST /v1/chat/completions``, ``POST /v1/embeddings`` and ``POST /v1/completions``.

A request the cache may serve (:mod:`ingress.cache.key`) is looked up
(:mod:`ingress.cache.lookup`) after the model is known to exist and be allowed, and before
admission: a hit makes no upstream call, so it
neither reserves budget nor counts towards rate limits (it costs the provider nothing,
which is what limits protect). A hit is accounted as a ``cache_hit`` event with the
original call's cost as ``saved_cost``. A miss runs as usual, its answer captured by the
relay for the cache and for identical requests waiting on it (:mod:`ingress.cache.dedup`).
With the semantic cache on, an exact miss is looked up by the meaning of its last user turn
(:mod:`ingress.cache.semantic`) before it is admitted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ingress.auth.principal import Principal
from ingress.cache import lookup, semantic_lookup
from ingress.cache.key import OFF, CachePolicy, cache_key, policy, scope_of
from ingress.cache.semantic import SIMILARITY_HEADER, combine
from ingress.cache.semantic_key import Prompt
from ingress.cache.store import CachedAnswer, Capture, Outcome
from ingress.deps import AuthedGateway, request_id
from ingress.dispatch import relay, replay
from ingress.dispatch.execution import Started
from ingress.dispatch.hangup import HangUp
from ingress.errors import ApiError, invalid
from ingress.metrics import CACHE, GenAI
from ingress.routes import upstream
from ingress.routes.body import read_body
from ingress.routing import classifier
from ingress.routing.router import Plan
from ingress.state import Gateway
from schemas import model_limits
from schemas.config import Deployment
from schemas.infer import Endpoint
from schemas.moderation import ModerationRequest
from schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from schemas.rerank import RerankRequest

router = APIRouter()
log = logging.getLogger("aigw.ingress")


async def _classified(
    request: Request, gateway: Gateway, plan: list[Deployment], model: str,
    body: dict[str, Any], judge: str,
) -> list[Deployment]:
    """The plan for the tier the classifier model ``judge`` answers, asked through the
    gateway's own path: admitted for the caller, dispatched to a worker, accounted under the
    request id plus ``-route``. ``plan`` (the feature score's) when it fails, is too slow or
    names no tier."""
    route = plan.route if isinstance(plan, Plan) else None
    judged = gateway.router.plan(judge)
    if route is None or not judged:
        return plan
    settings = gateway.router.settings.complexity
    ask = {"model": judge, **classifier.question(body, settings.tiers, route.features)}
    principal: Principal = request.state.principal
    try:
        async with asyncio.timeout(settings.classifier_timeout):
            started = await upstream.start(request, gateway, judged, judge, ask, Endpoint.CHAT,
                                           False, rid=f"{request_id(request)}-route",
                                           caller=upstream.caller_of(principal, body))
            response = await relay.json_response(started, gateway.settings.heartbeat_timeout,
                                                 gateway.gatekeeper.settle)
    except (ApiError, TimeoutError) as exc:
        log.info("complexity router: classifier %s failed (%s); the feature score decides",
                 judge, getattr(exc, "code", None) or type(exc).__name__)
        return plan
    answer = classifier.answer_text(json.loads(bytes(response.body)))
    tier = classifier.tier_in(answer, settings.tiers)
    if tier is None:
        log.info("complexity router: classifier %s named no tier; the feature score decides",
                 judge)
        return plan
    return gateway.router.plan(model, body, tier)


async def _semantic(
    request: Request, gateway: Gateway, prompt: Prompt, wanted: CachePolicy, model: str,
    body: dict[str, Any], endpoint: Endpoint, stream: bool, include_usage: bool,
    began: float,
) -> tuple[Response | None, Outcome | None, float | None]:
    """The semantic cache's step (:mod:`ingress.cache.semantic_lookup`), its embeddings
    call started and its hit accounted for this request's caller."""
    principal: Principal = request.state.principal
    caller, rid = upstream.caller_of(principal, body), request_id(request)

    def start(plan: list[Deployment], alias: str, embed: dict[str, Any]) -> Awaitable[Started]:
        return upstream.start(request, gateway, plan, alias, embed, Endpoint.EMBEDDINGS,
                              False, rid=f"{rid}-semantic", caller=caller)

    def account(answer: CachedAnswer, similarity: float) -> None:
        request.state.genai.provider = answer.provider
        lookup.publish_hit(gateway, principal, rid, model, endpoint, stream, caller, answer,
                           (time.perf_counter() - began) * 1000, similarity)

    return await semantic_lookup.run(gateway, prompt, wanted, start, account, stream,
                                     include_usage)


async def _answer(
    request: Request,
    gateway: Gateway,
    model: str,
    body: dict[str, Any],
    endpoint: Endpoint,
    stream: bool,
    include_usage: bool = False,
) -> Response:
    if stream:  # a stream notices a departed client at its next write
        return await _respond(request, gateway, model, body, endpoint, stream, include_usage)
    hangup = HangUp(request.receive)
    try:
        return await _respond(request, gateway, model, body, endpoint, stream, include_usage)
    except asyncio.CancelledError:
        if not hangup.gone:
            raise
        raise hangup.absorb() from None
    finally:
        hangup.close()


async def _respond(
    request: Request,
    gateway: Gateway,
    model: str,
    body: dict[str, Any],
    endpoint: Endpoint,
    stream: bool,
    include_usage: bool = False,
) -> Response:
    principal: Principal = request.state.principal
    plan = upstream.plan_for(gateway, principal, model, body)
    try:
        model_limits.check(plan, body, model)
    except model_limits.OverLimit as exc:
        raise invalid(str(exc), param=exc.param) from None
    genai = request.state.genai = GenAI(endpoint.value, model, stream=stream)
    settings = gateway.settings
    timeout = settings.heartbeat_timeout
    settle = gateway.gatekeeper.settle
    wanted = policy(body, request.headers.get("cache-control"), gateway.cache_ttls[endpoint],
                    settings.cache_max_ttl)
    if endpoint is Endpoint.COMPLETIONS:  # the cache replays answers in chat's shape
        wanted = OFF
    capture: Capture | None = None
    nearest: float | None = None
    if wanted.active:
        began = time.perf_counter()
        owner = scope_of(principal, settings.cache_scope)
        key = cache_key(endpoint.value, model, owner, body)
        answer = await lookup.cached(gateway, key, wanted) if wanted.lookup else None
        if answer is not None:
            genai.provider = answer.provider
            lookup.publish_hit(gateway, principal, request_id(request), model, endpoint,
                               stream, upstream.caller_of(principal, body), answer,
                               (time.perf_counter() - began) * 1000)
            return (replay.stream_hit(answer, include_usage) if stream
                    else replay.json_hit(answer))
        semantic: Outcome | None = None
        prompt = gateway.semantic.prompt(endpoint.value, model, owner, body)
        if prompt is not None:
            served, semantic, nearest = await _semantic(
                request, gateway, prompt, wanted, model, body, endpoint, stream,
                include_usage, began)
            if served is not None:
                return served
        if wanted.store:
            lead = None
            if settings.cache_dedup and gateway.inflight.leader(key) is None:
                lead = gateway.inflight.lead(key)
                answer = await lookup.lead_across_replicas(gateway, lead, wanted)
                if answer is not None:
                    genai.provider = answer.provider
                    lookup.publish_hit(gateway, principal, request_id(request), model,
                                       endpoint, stream, upstream.caller_of(principal, body),
                                       answer, (time.perf_counter() - began) * 1000)
                    return (replay.stream_hit(answer, include_usage) if stream
                            else replay.json_hit(answer))
            capture = Capture(gateway.cache, key, wanted.ttl, combine(lead, semantic))
        CACHE.labels("miss").inc()
    try:
        if endpoint is Endpoint.CHAT and (judge := gateway.router.classifier_for(model)):
            plan = await _classified(request, gateway, plan, model, body, judge)
        started = await upstream.start(request, gateway, plan, model, body, endpoint, stream)
    except BaseException:
        if capture is not None:
            capture.abandon()
        raise
    genai.provider = started.deployment.provider
    response: Response
    if stream:
        response = relay.stream_response(started, include_usage, timeout, settle, capture)
    else:
        response = await relay.json_response(started, timeout, settle, capture)
    if wanted.active:
        response.headers[replay.CACHE_HEADER] = "miss"
    if nearest is not None:  # how close the semantic cache came
        response.headers[SIMILARITY_HEADER] = f"{nearest:.4f}"
    if started.route is not None:  # the complexity router's tier and why
        response.headers.update(started.route.headers())
    return response


@router.post("/chat/completions")
async def chat_completions(request: Request, gateway: AuthedGateway) -> Response:
    parsed, body = await read_body(request, ChatCompletionRequest)
    stream = bool(parsed.stream)
    include_usage = bool(stream and parsed.stream_options and parsed.stream_options.include_usage)
    return await _answer(request, gateway, parsed.model, body, Endpoint.CHAT, stream,
                         include_usage)


@router.post("/embeddings")
async def embeddings(request: Request, gateway: AuthedGateway) -> Response:
    parsed, body = await read_body(request, EmbeddingRequest)
    return await _answer(request, gateway, parsed.model, body, Endpoint.EMBEDDINGS, False)


@router.post("/completions")
async def completions(request: Request, gateway: AuthedGateway) -> Response:
    """Legacy text completions, passed through to OpenAI-compatible upstreams."""
    parsed, body = await read_body(request, CompletionRequest)
    stream = bool(parsed.stream)
    include_usage = bool(stream and parsed.stream_options and parsed.stream_options.include_usage)
    return await _answer(request, gateway, parsed.model, body, Endpoint.COMPLETIONS, stream,
                         include_usage)


@router.post("/rerank")
async def rerank(request: Request, gateway: AuthedGateway) -> Response:
    """Documents ranked against a query (Cohere's and Jina's shape), by Cohere natively or
    an OpenAI-compatible server with ``/rerank``."""
    parsed, body = await read_body(request, RerankRequest)
    return await _answer(request, gateway, parsed.model, body, Endpoint.RERANK, False)


@router.post("/moderations")
async def moderations(request: Request, gateway: AuthedGateway) -> Response:
    """OpenAI's moderations, passed through to OpenAI and OpenAI-compatible upstreams."""
    parsed, body = await read_body(request, ModerationRequest)
    return await _answer(request, gateway, parsed.model, body, Endpoint.MODERATIONS, False)
