"""``/ui/logs`` (with a request's detail), ``/ui/models``, ``/ui/batches`` and the batch
files behind them. A virtual key sees its own logs and batches; the deployments page is
for the master key."""

from __future__ import annotations

import time
from typing import Any, get_args
from urllib.parse import urlencode

import pydantic
from fastapi import APIRouter, Request
from fastapi.responses import Response

from core.batch_store import BatchStore
from ingress.console import data
from ingress.console.guard import Denied, Viewer, admin, gateway_of, viewer
from ingress.console.pages import context
from ingress.console.paging import PER_PAGE, Page
from ingress.console.render import SECURITY_HEADERS, page
from ingress.routing.breaker import availability
from schemas.analytics import Status
from schemas.batch import BatchRecord, BatchStatus

router = APIRouter()

STATUSES = get_args(Status)
LOG_FILTERS = ("key_id", "team_id", "model", "status", "start", "end")


@router.get("/logs")
async def logs(request: Request, p: int = 1) -> Response:
    found = await viewer(request)
    params = request.query_params
    filters = {name: params.get(name, "").strip() for name in LOG_FILTERS}
    number = max(1, p)
    error = None
    rows: dict[str, Any] = {"data": [], "has_more": False}
    try:
        days = None if filters["start"] else 30
        q = data.query(found, **filters, days=days, limit=PER_PAGE,
                       offset=(number - 1) * PER_PAGE)
        rows = await data.ask(gateway_of(request), "logs", q)
    except pydantic.ValidationError as exc:
        error = data.invalid_filter(exc)
    except data.Unavailable as exc:
        error = str(exc)
    listing = Page(items=rows["data"], number=number, has_previous=number > 1,
                   has_next=bool(rows.get("has_more")))
    return page(request, "logs.html", status=400 if error and "did not" not in error else 200,
                **context(found, rows=listing, filters=filters, statuses=STATUSES,
                          error=error, query=_query(filters)))


def _query(filters: dict[str, str]) -> str:
    """The filters as a query string for the pagination links."""
    return urlencode({k: v for k, v in filters.items() if v})


@router.get("/logs/{request_id}")
async def log_detail(request: Request, request_id: str) -> Response:
    found = await viewer(request)
    try:
        q = data.query(found, request_id=request_id, days=30, limit=100)
        rows = await data.ask(gateway_of(request), "logs", q)
    except pydantic.ValidationError as exc:
        raise Denied(data.invalid_filter(exc)) from None
    except data.Unavailable as exc:
        return page(request, "log_detail.html", **context(
            found, request_id=request_id, attempts=[], error=str(exc)))
    attempts = sorted(rows["data"], key=lambda r: (r["attempt"], r["ts"]))
    if not attempts:
        raise Denied("No request with that id is in your logs of the last 30 days.")
    return page(request, "log_detail.html", **context(
        found, request_id=request_id, attempts=attempts, error=None))


@router.get("/models")
async def models(request: Request, p: int = 1) -> Response:
    found = await admin(request)
    router_ = gateway_of(request).router
    now = time.time()
    rows = []
    for deployment in router_.deployments:
        entry = router_.health.entry(deployment.id)
        check = router_.health.last_check(deployment.id)
        load = router_.load.load(deployment.id)
        rows.append({
            "deployment": deployment,
            "state": availability(entry, now).value,
            "reason": entry.reason if entry is not None else None,
            "check": check,
            "load": load,
        })
    return page(request, "models.html", **context(found, rows=Page.of(rows, p)))


def _store(request: Request) -> BatchStore:
    store: BatchStore | None = getattr(request.app.state, "batch_store", None)
    if store is None:
        raise Denied("Batches are not available on this gateway.")
    return store


def _may_see(found: Viewer, owner: str | None) -> bool:
    return found.is_admin or (found.principal.key_id is not None
                              and owner == found.principal.key_id)


_RUNNING = (BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING)


@router.get("/batches")
async def batches(request: Request, p: int = 1) -> Response:
    found = await viewer(request)
    store = _store(request)
    records: list[BatchRecord] = [r for r in await store.batches()
                                  if _may_see(found, r.owner)]
    records.sort(key=lambda r: r.batch.created_at, reverse=True)
    listing = Page.of(records, p)
    shown = []
    for record in listing.items:
        batch = record.batch
        counts = store.last_counts(batch.id) if batch.status in _RUNNING else None
        if counts is None and batch.status in _RUNNING:
            counts = await store.counts(batch.id)
        done = (counts[0] + counts[1]) if counts else (
            batch.request_counts.completed + batch.request_counts.failed)
        total = batch.request_counts.total
        shown.append({"record": record, "done": done, "total": total,
                      "percent": int(100 * done / total) if total else 0})
    return page(request, "batches.html", **context(
        found, batches=Page(items=shown, number=listing.number,
                            has_previous=listing.has_previous, has_next=listing.has_next)))


@router.get("/files/{file_id}")
async def file_content(request: Request, file_id: str) -> Response:
    found = await viewer(request)
    store = _store(request)
    record = await store.file(file_id)
    if record is None or not _may_see(found, record.owner):
        raise Denied("There is no such file among yours.")
    content = await store.content(file_id)
    if content is None:
        raise Denied("The file's contents are gone.")
    name = record.file.filename.replace('"', "")
    return Response(content, media_type="application/jsonl", headers={
        **SECURITY_HEADERS, "content-disposition": f'attachment; filename="{name}"'})
