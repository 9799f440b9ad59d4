"""``POST /v1/chat/completions``, ``POST /v1/embeddings`` and ``POST /v1/completions``.

A request the cache may serve (:mod:`ingress.cache.key`) is looked up after the model is
known to exist and be allowed, and before admission: a hit makes no upstream call, so it
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
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from ingress import json_body
from ingress.admission.gatekeeper import Ticket
from ingress.auth.principal import Principal, allowed
from ingress.cache import semantic_lookup
from ingress.cache.dedup import Lead
from ingress.cache.dedup_shared import SharedLeads
from ingress.cache.key import OFF, CachePolicy, cache_key, policy, scope_of
from ingress.cache.semantic import SIMILARITY_HEADER, combine
from ingress.cache.semantic_key import Prompt
from ingress.cache.store import CachedAnswer, Capture, Outcome
from ingress.deps import AuthedGateway, request_id
from ingress.dispatch import execution, lost, relay, replay
from ingress.dispatch.execution import Caller, Started
from ingress.dispatch.hangup import HangUp
from ingress.errors import ApiError, invalid
from ingress.metrics import CACHE, GenAI
from ingress.routing import classifier
from ingress.routing.router import Plan
from ingress.state import Gateway
from schemas import model_limits
from schemas.config import Deployment
from schemas.infer import Endpoint
from schemas.moderation import ModerationRequest
from schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from schemas.rerank import RerankRequest
from schemas.usage import UsageEvent, UsageStatus, event_id

router = APIRouter()
log = logging.getLogger("aigw.ingress")

T = TypeVar("T", bound=BaseModel)


async def read_body(request: Request, model: type[T]) -> tuple[T, dict[str, Any]]:
    raw = await request.body()
    try:
        body = await json_body.parse_off_loop(raw)
    except json_body.BadJson as exc:
        raise invalid(str(exc), code="invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(body), body
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        text = str(first["msg"]).removeprefix("Value error, ")
        message = f"{param}: {text}" if param else text
        raise invalid(message, param=param) from None


def _plan(
    gateway: Gateway, principal: Principal, model: str, body: dict[str, Any] | None = None,
) -> list[Deployment]:
    plan = gateway.router.plan(model, body)
    if not plan:
        raise ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    if not allowed(principal, model):
        raise ApiError(
            403,
            f"This key may not use the model `{model}`.",
            type="permission_error",
            code="model_not_allowed",
            param="model",
        )
    return plan


def _caller(principal: Principal, body: dict[str, Any]) -> Caller:
    end_user = body.get("safety_identifier") or body.get("user")
    metadata = body.get("metadata")
    return Caller(
        key_id=principal.key_id,
        team_id=principal.team_id,
        end_user=end_user if isinstance(end_user, str) else None,
        metadata=metadata if isinstance(metadata, dict) else None,
        may_use=None if principal.is_unrestricted else partial(allowed, principal),
    )


async def _start(
    request: Request,
    gateway: Gateway,
    plan: list[Deployment],
    model: str,
    body: dict[str, Any],
    endpoint: Endpoint,
    stream: bool,
    rid: str | None = None,
    caller: Caller | None = None,
) -> Started:
    principal: Principal = request.state.principal
    rid = rid or request_id(request)
    gatekeeper = gateway.gatekeeper
    generates = endpoint not in (Endpoint.EMBEDDINGS, Endpoint.RERANK, Endpoint.MODERATIONS)

    async def admit(deployment: Deployment, attempt: int) -> Ticket:
        try:
            return await gatekeeper.admit(
                principal, deployment, f"{rid}:{attempt}", body, generates)
        except ApiError as exc:
            if exc.status == 429:
                _publish_rejection(gateway, principal, rid, attempt, model, deployment,
                                   endpoint, stream, exc)
            raise

    def on_lost(silence: lost.Silence) -> bool:
        return lost.account(silence, connected=gateway.dispatcher.connected,
                            prices=gatekeeper.prices, publish=gateway.usage.submit,
                            settle=gatekeeper.settle)

    return await execution.start(
        gateway.dispatcher,
        plan,
        request_id=rid,
        endpoint=endpoint,
        model_alias=model,
        body=body,
        stream=stream,
        heartbeat_interval=gateway.settings.heartbeat_interval,
        heartbeat_timeout=gateway.settings.heartbeat_timeout,
        admit=admit,
        settle=gatekeeper.settle,
        lost=on_lost,
        caller=caller or _caller(principal, body),
    )


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
            started = await _start(request, gateway, judged, judge, ask, Endpoint.CHAT, False,
                                   rid=f"{request_id(request)}-route",
                                   caller=_caller(principal, body))
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


def _publish_rejection(
    gateway: Gateway, principal: Principal, rid: str, attempt: int, model: str,
    deployment: Deployment, endpoint: Endpoint, stream: bool, error: ApiError,
) -> None:
    """A request the gateway refused is accounted too, with no cost."""
    gateway.usage.submit(UsageEvent(
        event_id=event_id(rid, attempt, "ingress"),
        request_id=rid,
        attempt=attempt,
        key_id=principal.key_id,
        team_id=principal.team_id,
        model_alias=model,
        provider=deployment.provider,
        deployment_id=deployment.id,
        upstream_model=deployment.upstream_model,
        endpoint=endpoint.value,
        streamed=stream,
        status=UsageStatus.REJECTED,
        error_type=error.code or error.type,
        http_status=error.status,
    ))


def _publish_hit(
    gateway: Gateway, principal: Principal, rid: str, model: str, endpoint: Endpoint,
    stream: bool, caller: Caller, answer: CachedAnswer, latency_ms: float,
    similarity: float | None = None,
) -> None:
    """A request served from the cache: no tokens used, nothing spent, the original
    call's cost saved. A semantic hit says so in the metadata, with its similarity."""
    metadata = {k: v for k, v in (caller.metadata or {}).items() if isinstance(v, str)}
    if similarity is not None:
        metadata.update(aigw_cache="semantic", aigw_similarity=f"{similarity:.4f}")
    gateway.usage.submit(UsageEvent(
        event_id=event_id(rid, 0, "ingress"),
        request_id=rid,
        key_id=principal.key_id,
        team_id=principal.team_id,
        end_user=caller.end_user,
        model_alias=model,
        provider=answer.provider,
        deployment_id=answer.deployment_id,
        upstream_model=answer.upstream_model,
        endpoint=endpoint.value,
        streamed=stream,
        status=UsageStatus.CACHE_HIT,
        cost=Decimal(0),
        saved_cost=answer.cost,
        latency_ms=latency_ms,
        metadata=metadata,
    ))


async def _cached(gateway: Gateway, key: str, wanted: CachePolicy) -> CachedAnswer | None:
    """An answer without an upstream call of our own: an identical request's in flight
    (no round trip), else the store's (one round trip), else one that started while we
    looked. None: make the call."""
    inflight = gateway.inflight if gateway.settings.cache_dedup else None
    if inflight is not None and (leader := inflight.leader(key)) is not None:
        return _counted(await inflight.follow(leader), "dedup_join")
    answer = await gateway.cache.lookup(key, wanted.max_age)
    if answer is None and inflight is not None and (leader := inflight.leader(key)) is not None:
        return _counted(await inflight.follow(leader), "dedup_join")
    return _counted(answer, "hit")


def _counted(answer: CachedAnswer | None, result: str) -> CachedAnswer | None:
    if answer is not None:
        CACHE.labels(result).inc()
    return answer


async def _lead_across_replicas(
    gateway: Gateway, lead: Lead, wanted: CachePolicy
) -> CachedAnswer | None:
    """Claim ``lead``'s key for this replica; when another replica's identical call is
    already running, wait for its answer instead (None: make our own call)."""
    shared = gateway.shared_leads
    if shared is None or not gateway.cache.shared:
        return None
    key = lead.key
    if await shared.claim(key):
        lead.on_end = partial(_announce_end, shared, key)
        return None
    if not wanted.lookup:
        return None
    try:
        answer = await shared.follow(key, partial(gateway.cache.lookup, key, wanted.max_age))
    except BaseException:  # our client left: our own followers make their own calls
        lead.release()
        raise
    if answer is not None:
        CACHE.labels("dedup_join").inc()  # this replica's own followers get it too
        lead.resolve(answer)
        lead.release()
    return answer


_announcing: set[asyncio.Task[None]] = set()


def _announce_end(shared: SharedLeads, key: str, stored: bool) -> None:
    task = asyncio.create_task(shared.ended(key, stored))
    _announcing.add(task)
    task.add_done_callback(_announcing.discard)


async def _semantic(
    request: Request, gateway: Gateway, prompt: Prompt, wanted: CachePolicy, model: str,
    body: dict[str, Any], endpoint: Endpoint, stream: bool, include_usage: bool,
    began: float,
) -> tuple[Response | None, Outcome | None, float | None]:
    """The semantic cache's step (:mod:`ingress.cache.semantic_lookup`), its embeddings
    call started and its hit accounted for this request's caller."""
    principal: Principal = request.state.principal
    caller, rid = _caller(principal, body), request_id(request)

    def start(plan: list[Deployment], alias: str, embed: dict[str, Any]) -> Awaitable[Started]:
        return _start(request, gateway, plan, alias, embed, Endpoint.EMBEDDINGS, False,
                      rid=f"{rid}-semantic", caller=caller)

    def account(answer: CachedAnswer, similarity: float) -> None:
        request.state.genai.provider = answer.provider
        _publish_hit(gateway, principal, rid, model, endpoint, stream, caller, answer,
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
    plan = _plan(gateway, principal, model, body)
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
        answer = await _cached(gateway, key, wanted) if wanted.lookup else None
        if answer is not None:
            genai.provider = answer.provider
            _publish_hit(gateway, principal, request_id(request), model, endpoint, stream,
                         _caller(principal, body), answer,
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
                answer = await _lead_across_replicas(gateway, lead, wanted)
                if answer is not None:
                    genai.provider = answer.provider
                    _publish_hit(gateway, principal, request_id(request), model, endpoint,
                                 stream, _caller(principal, body), answer,
                                 (time.perf_counter() - began) * 1000)
                    return (replay.stream_hit(answer, include_usage) if stream
                            else replay.json_hit(answer))
            capture = Capture(gateway.cache, key, wanted.ttl, combine(lead, semantic))
        CACHE.labels("miss").inc()
    try:
        if endpoint is Endpoint.CHAT and (judge := gateway.router.classifier_for(model)):
            plan = await _classified(request, gateway, plan, model, body, judge)
        started = await _start(request, gateway, plan, model, body, endpoint, stream)
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
