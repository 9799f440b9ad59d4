"""``POST /v1/images/generations``, ``/v1/images/edits``, ``/v1/audio/transcriptions``,
``/v1/audio/translations`` and ``/v1/audio/speech``, for OpenAI-compatible deployments.

Uploaded files go to the object store (``core.media_store``) and the attempt names them
(``schemas.media``), so a file larger than a NATS message reaches the worker; they are
deleted once the answer is out. Admission reserves what the call can cost at most: its
images at their size and quality, its speech characters, its audio's seconds (read from a
WAV header, else assumed at 32 kbit/s), and settles with what the worker reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from decimal import Decimal
from typing import Any

import nats.errors
from fastapi import APIRouter, Request
from fastapi.responses import Response

from core.media_pricing import deployment_cost
from core.media_store import MediaStore, object_name
from ingress.admission import media_reserve
from ingress.admission.gatekeeper import Ticket
from ingress.auth.principal import Principal
from ingress.deps import AuthedGateway, request_id
from ingress.dispatch import execution, lost, media_relay
from ingress.dispatch.execution import Started
from ingress.dispatch.hangup import HangUp
from ingress.dispatch.lost import Silence
from ingress.errors import ApiError, invalid
from ingress.routes import form, upstream
from ingress.routes.body import read_body
from ingress.state import Gateway
from schemas.attempt_usage import attempt_event
from schemas.config import Deployment
from schemas.errors import ErrorInfo, ErrorKind
from schemas.infer import Endpoint
from schemas.media import (
    FILES_KEY,
    PATHS,
    PROVIDERS,
    ImageRequest,
    MediaFile,
    SpeechRequest,
    speech_content_type,
)

log = logging.getLogger("aigw.ingress")
router = APIRouter()

_TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


def _store(request: Request, gateway: Gateway) -> MediaStore:
    store: MediaStore | None = getattr(request.app.state, "media_store", None)
    if store is None:
        store = request.app.state.media_store = MediaStore(gateway.nc.jetstream())
    return store


def _media_plan(gateway: Gateway, principal: Principal, model: str,
                endpoint: Endpoint) -> list[Deployment]:
    plan = upstream.plan_for(gateway, principal, model)
    refused = sorted({d.provider for d in plan if d.provider not in PROVIDERS})
    if refused:
        raise invalid(f"The model `{model}` is served by {', '.join(refused)}, which has no "
                      f"/v1{PATHS[endpoint]} endpoint; use an OpenAI or OpenAI-compatible "
                      "deployment.", param="model", code="unsupported_endpoint")
    return plan


def _account_lost(gateway: Gateway, endpoint: Endpoint, audio: bytes | None,
                  silence: Silence) -> bool:
    """A lost worker's attempt, accounted at the ingress at what it asked for."""
    if not lost.worker_lost(silence.cause, gateway.dispatcher.connected):
        return False
    request, deployment = silence.request, silence.deployment
    usage = media_reserve.media_estimate(endpoint, request.body, audio)
    prices = gateway.gatekeeper.prices
    cost = deployment_cost(media_reserve.PRICES, deployment, usage, prices)
    error = ErrorInfo.of(ErrorKind.TIMEOUT, "the worker running this attempt was lost",
                         status=lost.HTTP_STATUS, code="worker_lost")
    gateway.usage.submit(attempt_event(
        request, deployment.provider, deployment, usage, error, cancelled=False,
        latency_ms=(time.monotonic() - silence.sent_at) * 1000, ttft_ms=None, cost=cost,
        price_version=prices.version))
    gateway.gatekeeper.settle(silence.ticket, 0, cost)
    log.warning("attempt %d of %s: worker on %s lost; accounted what it asked for",
                request.attempt, request.request_id, deployment.id)
    return True


async def _start(request: Request, gateway: Gateway, plan: list[Deployment], model: str,
                 body: dict[str, Any], endpoint: Endpoint, audio: bytes | None) -> Started:
    principal: Principal = request.state.principal
    rid = request_id(request)
    gatekeeper = gateway.gatekeeper
    stream = endpoint is Endpoint.SPEECH

    async def admit(deployment: Deployment, attempt: int) -> Ticket:
        try:
            return await gatekeeper.admit(
                principal, deployment, f"{rid}:{attempt}", body, True,
                reserve=media_reserve.most_cost(deployment, endpoint, body, audio)
                or Decimal(0))
        except ApiError as exc:
            if exc.status == 429:
                upstream.publish_rejection(gateway, principal, rid, attempt, model,
                                           deployment, endpoint, stream, exc)
            raise

    def on_lost(silence: Silence) -> bool:
        return _account_lost(gateway, endpoint, audio, silence)

    return await execution.start(
        gateway.dispatcher, plan, request_id=rid, endpoint=endpoint, model_alias=model,
        body=body, stream=stream,
        heartbeat_interval=gateway.settings.heartbeat_interval,
        heartbeat_timeout=gateway.settings.heartbeat_timeout,
        admit=admit, settle=gatekeeper.settle, lost=on_lost,
        caller=upstream.caller_of(principal, body),
    )


async def _answer(request: Request, gateway: Gateway, model: str, body: dict[str, Any],
                  endpoint: Endpoint, uploads: list[form.Part] | None = None) -> Response:
    principal: Principal = request.state.principal
    plan = _media_plan(gateway, principal, model, endpoint)
    store = _store(request, gateway)
    # Only the gateway names uploads: a client's own list could name another's.
    body = {k: v for k, v in body.items() if k != FILES_KEY}
    stored: list[str] = []
    audio = next((p.data for p in uploads or () if p.name == "file"), None)
    timeout, settle = gateway.settings.heartbeat_timeout, gateway.gatekeeper.settle
    try:
        if uploads:
            rid = f"{request_id(request)}-{uuid.uuid4().hex[:8]}"
            refs = await _put(store, rid, uploads, stored)
            body = {**body, FILES_KEY: [r.model_dump() for r in refs]}
        if endpoint is Endpoint.SPEECH:
            started = await _start(request, gateway, plan, model, body, endpoint, None)
            return await media_relay.audio_response(
                started, timeout, settle, speech_content_type(body.get("response_format")))
        hangup = HangUp(request.receive)
        try:
            started = await _start(request, gateway, plan, model, body, endpoint, audio)
            return await media_relay.whole_response(started, timeout, settle, store)
        except asyncio.CancelledError:
            if not hangup.gone:
                raise
            raise hangup.absorb() from None
        finally:
            hangup.close()
    finally:
        for name in stored:
            await store.delete(name)


async def _put(store: MediaStore, rid: str, uploads: list[form.Part],
               stored: list[str]) -> list[MediaFile]:
    """The uploads in the object store (each name added to ``stored`` once it is there)."""
    refs = []
    for part in uploads:
        name = object_name(rid, part.name)
        try:
            await store.put(name, part.data)
        except (nats.errors.Error, TimeoutError) as exc:
            raise ApiError(503, f"The object store is unavailable ({type(exc).__name__}); "
                           "try again shortly.", type="server_error",
                           code="nats_unavailable") from None
        stored.append(name)
        refs.append(MediaFile(field=part.name, name=name, filename=part.filename or part.name,
                              content_type=part.content_type, size=len(part.data)))
    return refs


async def _form(request: Request, limit: int) -> dict[str, form.Part]:
    """The multipart form of an upload route (the body limit caps it as it streams in)."""
    body = await request.body()
    try:
        parts = await asyncio.to_thread(form.parse, request.headers.get("content-type", ""),
                                        body)
    except form.FormError as exc:
        raise invalid(str(exc), code="invalid_form") from None
    for part in parts.values():
        if part.filename is not None and len(part.data) > limit:
            raise ApiError(413, f"The file `{part.filename}` is {len(part.data):,} bytes; "
                           f"this gateway accepts at most {limit:,}.", param=part.name,
                           code="file_too_large")
    return parts


def _text(parts: dict[str, form.Part]) -> dict[str, Any]:
    """The form's text fields, as the JSON body of an attempt carries them."""
    return {name: part.data.decode(errors="replace") for name, part in parts.items()
            if part.filename is None}


def _required(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"Missing required parameter: '{name}'.", param=name)
    return value


def _file(parts: dict[str, form.Part], name: str) -> form.Part:
    part = parts.get(name)
    if part is None or part.filename is None:
        raise invalid(f"Missing required parameter: '{name}' (a file).", param=name)
    if not part.data:
        raise invalid(f"The file `{part.filename}` is empty.", param=name, code="empty_file")
    return part


def _limit(gateway: Gateway) -> int:
    """OpenAI's 25 MB by default; a self-hosted upstream may take more."""
    return gateway.settings.max_media_bytes


@router.post("/images/generations")
async def image_generations(request: Request, gateway: AuthedGateway) -> Response:
    """Images from a prompt (``response_format`` ``url`` or ``b64_json``)."""
    parsed, body = await read_body(request, ImageRequest)
    return await _answer(request, gateway, parsed.model, body, Endpoint.IMAGES)


@router.post("/images/edits")
async def image_edits(request: Request, gateway: AuthedGateway) -> Response:
    """An image edited after a prompt (multipart: ``image``, optional ``mask``)."""
    parts = await _form(request, _limit(gateway))
    fields = _text(parts)
    model = _required(fields, "model")
    _required(fields, "prompt")
    # gpt-image-1 takes ``image[]`` (the SDK's name for a list of images); one is passed on.
    uploads = [_file(parts, "image[]" if "image" not in parts and "image[]" in parts
                     else "image")]
    if "mask" in parts:
        uploads.append(_file(parts, "mask"))
    return await _answer(request, gateway, model, fields, Endpoint.IMAGE_EDITS, uploads)


async def _transcribe(request: Request, gateway: Gateway, endpoint: Endpoint) -> Response:
    parts = await _form(request, _limit(gateway))
    fields = _text(parts)
    model = _required(fields, "model")
    fmt = fields.get("response_format")
    if fmt is not None and fmt not in _TRANSCRIPT_FORMATS:
        raise invalid(f"'{fmt}' is not one of {list(_TRANSCRIPT_FORMATS)} - "
                      "'response_format'", param="response_format")
    return await _answer(request, gateway, model, fields, endpoint, [_file(parts, "file")])


@router.post("/audio/transcriptions")
async def transcriptions(request: Request, gateway: AuthedGateway) -> Response:
    """Audio to text in its own language (multipart: ``file``, ``model``)."""
    return await _transcribe(request, gateway, Endpoint.TRANSCRIPTIONS)


@router.post("/audio/translations")
async def translations(request: Request, gateway: AuthedGateway) -> Response:
    """Audio to English text (multipart: ``file``, ``model``)."""
    return await _transcribe(request, gateway, Endpoint.TRANSLATIONS)


@router.post("/audio/speech")
async def speech(request: Request, gateway: AuthedGateway) -> Response:
    """Text to speech; the audio streams back in ``response_format`` (mp3 by default)."""
    parsed, body = await read_body(request, SpeechRequest)
    return await _answer(request, gateway, parsed.model, body, Endpoint.SPEECH)
