"""``/v1/batches``: create, retrieve, list and cancel batches (OpenAI's Batch API).

Creating a batch reads and validates its input file at once (the batch is ``validating``
meanwhile): a bad line, a model that does not exist or that the key may not use fails the
batch with every such line in ``errors``. Otherwise each line becomes one work-queue
message for the provider of the deployment it was given, and the batch is
``in_progress``. Workers run the items (:mod:`workers.batch`); the finalizer
(:mod:`ingress.batch.finalizer`) writes the output files.

Budget: a key (or team) whose daily or monthly budget is spent may not start a batch
(429 ``insufficient_quota``); each item is then admitted as it runs
(:mod:`ingress.batch.admission`), so a running batch stops at the budget.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import uuid
from decimal import Decimal
from functools import partial
from typing import Any

import nats.errors
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from ingress.admission.gatekeeper import scopes_for
from ingress.audit import AuditTrail
from ingress.auth.principal import Principal, allowed
from ingress.batch import input as batch_input
from ingress.batch.input import ModelRefused
from ingress.deps import AuthedGateway
from ingress.errors import ApiError, invalid
from ingress.routes.body import read_body
from ingress.routes.files import StoreDep, StoreRoute, may_see, visible_file
from ingress.state import Gateway
from schemas.batch import (
    COMPLETION_WINDOW,
    ENDPOINTS,
    WINDOW_SECONDS,
    Batch,
    BatchError,
    BatchErrors,
    BatchRecord,
    BatchStatus,
    RequestCounts,
)
from schemas.config import Deployment

log = logging.getLogger("aigw.batch")
router = APIRouter(route_class=StoreRoute)


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="allow")

    input_file_id: str = Field(min_length=1)
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None


def _not_found(batch_id: str) -> ApiError:
    return ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id",
                    code="batch_not_found")


async def _budget_spent(gateway: Gateway, principal: Principal) -> str | None:
    """Which of the caller's budgets has nothing left, if any."""
    scopes = [s for s in scopes_for(principal, None) if s.has_budget]
    if not scopes:
        return None
    status = await gateway.gatekeeper.admission.status(scopes)
    for entry in status["scopes"]:
        for period in ("daily", "monthly"):
            budget = entry.get(period)
            if budget and Decimal(budget["remaining"]) <= 0:
                return f"the {entry['kind']} {entry['label'] or entry['id']}'s {period} budget"
    return None


def _resolver(gateway: Gateway, principal: Principal) -> batch_input.Resolve:
    def resolve(model: str) -> list[Deployment]:
        if not allowed(principal, model):
            raise ModelRefused("model_not_allowed", f"This key may not use the model `{model}`.")
        plan = list(gateway.router.plan(model))
        if not plan:
            raise ModelRefused(
                "model_not_found",
                f"The model `{model}` does not exist or you do not have access to it.")
        return plan
    return resolve


@router.post("/batches")
async def create_batch(request: Request, gateway: AuthedGateway, store: StoreDep) -> Batch:
    parsed, _ = await read_body(request, CreateBatch)
    principal: Principal = request.state.principal
    if parsed.endpoint not in ENDPOINTS:
        raise invalid(f"The endpoint {parsed.endpoint!r} is not supported for batches here; "
                      f"use one of {sorted(ENDPOINTS)}.", param="endpoint",
                      code="unsupported_endpoint")
    if parsed.completion_window != COMPLETION_WINDOW:
        raise invalid(f"completion_window must be '{COMPLETION_WINDOW}'.",
                      param="completion_window")
    if parsed.metadata is not None and len(parsed.metadata) > 16:
        raise invalid("metadata may have at most 16 pairs.", param="metadata")
    source = await visible_file(request, store, parsed.input_file_id)
    if source.file.purpose != "batch":
        raise invalid(f"The file {source.file.id} was not uploaded with purpose 'batch'.",
                      param="input_file_id", code="invalid_file_purpose")
    spent = await _budget_spent(gateway, principal)
    if spent is not None:
        raise ApiError(429, f"This batch cannot start: {spent} is spent.",
                       type="insufficient_quota", code="budget_exceeded")
    data = await store.content(source.file.id)
    if data is None:
        raise ApiError(404, f"No such File object: {source.file.id}", param="input_file_id",
                       code="file_not_found")
    now = int(time.time())
    batch_id = f"batch_{uuid.uuid4().hex}"
    batch = Batch(id=batch_id, endpoint=parsed.endpoint, input_file_id=source.file.id,
                  status=BatchStatus.VALIDATING, created_at=now,
                  expires_at=now + WINDOW_SECONDS, metadata=parsed.metadata)
    record = BatchRecord(batch=batch, owner=principal.key_id, team_id=principal.team_id)
    await store.create_batch(record)
    # Reading 50,000 lines takes a second or two: off the event loop, so the replica's
    # other requests do not wait for it.
    try:
        items = await asyncio.to_thread(
            batch_input.parse, data, batch_id, parsed.endpoint,
            batch_input.Caller(key_id=principal.key_id, team_id=principal.team_id),
            _on_loop(asyncio.get_running_loop(), _resolver(gateway, principal)),
            gateway.settings.heartbeat_interval, store.max_payload)
    except Exception as exc:  # a bug, not the file's fault: the batch fails, no 500
        log.exception("batch %s: validating its input file failed", batch_id)
        return await _fail(store, record, "validation_failed", "The gateway could not read "
                           f"this batch's input file ({type(exc).__name__}).")
    now = int(time.time())
    if items.errors:
        failed = batch.model_copy(update={
            "status": BatchStatus.FAILED, "failed_at": now,
            "errors": BatchErrors(data=items.errors)})
        record = record.model_copy(update={"batch": failed})
    else:
        routed = items.items
        providers = sorted({q.provider for q in routed})
        # The count and providers are stored before the items go out, so the finalizer
        # knows what to wait for as soon as the first result lands.
        record = record.model_copy(update={"providers": providers, "batch": batch.model_copy(
            update={"request_counts": RequestCounts(total=len(routed))})})
        counted = await store.update(batch_id, partial(_still_validating, record))
        if counted is None or counted.batch.status is not BatchStatus.VALIDATING:
            return (counted or record).batch  # cancelled meanwhile: nothing to run
        try:
            await store.publish_items(routed)
        except Exception as exc:
            # Items that went out are skipped by workers once the batch is failed.
            log.warning("batch %s: publishing its items failed: %r", batch_id, exc)
            transient = isinstance(exc, nats.errors.Error | TimeoutError)
            failed = await _fail(store, record, "publish_failed", (
                "The gateway could not queue this batch's requests; submit it again."
                if transient else f"The gateway could not queue this batch's requests "
                f"({type(exc).__name__})."))
            if transient:
                raise ApiError(503, f"The batch {batch_id} could not be queued "
                               f"({type(exc).__name__}) and has failed; submit it again.",
                               type="server_error", code="publish_failed") from None
            return failed
        record = record.model_copy(update={"batch": record.batch.model_copy(
            update={"status": BatchStatus.IN_PROGRESS, "in_progress_at": now})})

    stored = await store.update(batch_id, partial(_still_validating, record))
    return (stored or record).batch


# The event loop answers a resolve from the validating thread at once unless it is gone.
_RESOLVE_TIMEOUT = 30.0


def _on_loop(loop: asyncio.AbstractEventLoop, resolve: batch_input.Resolve
             ) -> batch_input.Resolve:
    """``resolve`` for a thread: the router is the event loop's, so it runs there."""
    def call(model: str) -> list[Deployment]:
        done: concurrent.futures.Future[list[Deployment]] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(resolve(model))
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=_RESOLVE_TIMEOUT)
    return call


def _still_validating(new: BatchRecord, current: BatchRecord) -> BatchRecord | None:
    """``new``, unless the batch left ``validating`` meanwhile (a cancel)."""
    return new if current.batch.status is BatchStatus.VALIDATING else None


async def _fail(store: StoreDep, record: BatchRecord, code: str, message: str) -> Batch:
    """Fail a batch still ``validating``; with NATS away, the finalizer fails it later."""
    failed = _failed(record, code, message)
    try:
        stored = await store.update(record.batch.id, partial(_still_validating, failed))
    except Exception as exc:
        log.warning("batch %s: could not be marked failed: %r", record.batch.id, exc)
        return failed.batch
    return (stored or failed).batch


def _failed(record: BatchRecord, code: str, message: str) -> BatchRecord:
    batch = record.batch.model_copy(update={
        "status": BatchStatus.FAILED, "failed_at": int(time.time()),
        "errors": BatchErrors(data=[BatchError(code=code, message=message)])})
    return record.model_copy(update={"batch": batch})


async def _visible(request: Request, store: StoreDep, batch_id: str) -> BatchRecord:
    record = await store.batch(batch_id)
    if record is None or not may_see(request.state.principal, record.owner):
        raise _not_found(batch_id)
    return record


_RUNNING = (BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING)


def _with_counts(batch: Batch, counts: tuple[int, int] | None) -> Batch:
    if counts is None:
        return batch
    completed, failed = counts
    return batch.model_copy(update={"request_counts": batch.request_counts.model_copy(
        update={"completed": completed, "failed": failed})})


async def _live(store: StoreDep, record: BatchRecord) -> Batch:
    """The batch with its counts as of (about) now while its items run."""
    batch = record.batch
    if batch.status not in _RUNNING:
        return batch
    return _with_counts(batch, await store.counts(batch.id))


def _listed(store: StoreDep, record: BatchRecord) -> Batch:
    """The batch with the counts last seen on this replica: a page of 100 running batches
    costs no count of their results."""
    batch = record.batch
    if batch.status not in _RUNNING:
        return batch
    return _with_counts(batch, store.last_counts(batch.id))


@router.get("/batches/{batch_id}")
async def retrieve_batch(
    request: Request, gateway: AuthedGateway, store: StoreDep, batch_id: str
) -> Batch:
    return await _live(store, await _visible(request, store, batch_id))


@router.get("/batches")
async def list_batches(
    request: Request, gateway: AuthedGateway, store: StoreDep, after: str | None = None,
    limit: int = 20,
) -> dict[str, Any]:
    if not 1 <= limit <= 100:
        raise invalid("limit must be between 1 and 100.", param="limit")
    principal: Principal = request.state.principal
    records = sorted((r for r in await store.batches() if may_see(principal, r.owner)),
                     key=lambda r: (r.batch.created_at, r.batch.id), reverse=True)
    if after is not None:
        ids = [r.batch.id for r in records]
        records = records[ids.index(after) + 1:] if after in ids else []
    page = [_listed(store, r) for r in records[:limit]]
    return {"object": "list", "data": [b.model_dump(mode="json") for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None, "has_more": len(records) > limit}


_CANCELLABLE = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING)


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(
    request: Request, gateway: AuthedGateway, store: StoreDep, batch_id: str
) -> Batch:
    record = await _visible(request, store, batch_id)
    if record.batch.status not in (*_CANCELLABLE, BatchStatus.CANCELLING):
        raise ApiError(409, f"Cannot cancel a batch with status '{record.batch.status.value}'.",
                       code="batch_not_cancellable")

    def cancel(current: BatchRecord) -> BatchRecord | None:
        if current.batch.status not in _CANCELLABLE:
            return None
        batch = current.batch.model_copy(update={"status": BatchStatus.CANCELLING,
                                                 "cancelling_at": int(time.time())})
        return current.model_copy(update={"batch": batch})

    updated = await store.update(batch_id, cancel)
    if updated is None:
        raise _not_found(batch_id)
    if updated.batch.status in (BatchStatus.COMPLETED, BatchStatus.FAILED,
                                BatchStatus.EXPIRED):
        raise ApiError(409, f"Cannot cancel a batch with status '{updated.batch.status.value}'.",
                       code="batch_not_cancellable")
    principal: Principal = request.state.principal
    trail: AuditTrail | None = getattr(request.app.state, "audit", None)
    if principal.master and trail is not None:  # an admin action on someone's batch
        trail.record(request, "batch.cancel", "batch", batch_id,
                     {"status": record.batch.status.value},
                     {"status": updated.batch.status.value})
    return await _live(store, updated)
