"""``/v1/files``: upload, list, retrieve, read and delete files (the Batch API's input
and output). A file belongs to the key that uploaded it; the master key sees every file.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import nats.errors
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from core.batch_store import BatchStore
from ingress.auth.principal import Principal
from ingress.deps import AuthedGateway
from ingress.errors import ApiError, invalid
from ingress.routes import form
from schemas.batch import (
    FILE_PURPOSES,
    MAX_FILE_BYTES,
    ExpiryError,
    FileObject,
    FileRecord,
    file_expiry,
)


class StoreRoute(APIRoute):
    """NATS unreachable or timing out while a file or batch is read or written: a 503 the
    client may retry, not a 500."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (nats.errors.Error, TimeoutError) as exc:
                raise ApiError(503, f"The batch store is unavailable ({type(exc).__name__}); "
                               "try again shortly.", type="server_error",
                               code="nats_unavailable") from None

        return guarded


router = APIRouter(route_class=StoreRoute)


async def batch_store(request: Request, gateway: AuthedGateway) -> BatchStore:
    store: BatchStore = request.app.state.batch_store
    return store


StoreDep = Annotated[BatchStore, Depends(batch_store)]


def owner_of(principal: Principal) -> str | None:
    return principal.key_id


def may_see(principal: Principal, owner: str | None) -> bool:
    """A key sees what it created; the master key (or anybody, with no master key) all."""
    return principal.master or principal.key is None or owner == principal.key_id


def _not_found(file_id: str) -> ApiError:
    return ApiError(404, f"No such File object: {file_id}", param="file_id",
                    code="file_not_found")


async def visible_file(request: Request, store: BatchStore, file_id: str) -> FileRecord:
    record = await store.file(file_id)
    if (record is None or record.expired(time.time())
            or not may_see(request.state.principal, record.owner)):
        raise _not_found(file_id)
    return record


# The multipart framing around a file of the largest size.
_FORM_ROOM = 65536


def _too_large() -> ApiError:
    return ApiError(413, f"A file may be at most {MAX_FILE_BYTES:,} bytes.",
                    code="file_too_large", param="file")


async def form_body(request: Request, limit: int = MAX_FILE_BYTES + _FORM_ROOM) -> bytes:
    """The request body, refused (413) once it passes ``limit`` bytes, whether or not the
    client said its length (a chunked upload does not)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/files")
async def upload(request: Request, store: StoreDep, gateway: AuthedGateway) -> FileObject:
    """Store a file. ``expires_after[anchor]`` (only ``created_at``) with
    ``expires_after[seconds]`` (3600 to 2592000) sets its ``expires_at``; without them a
    ``purpose=batch`` file expires after 30 days, as at OpenAI, and any other is kept until
    deleted. An expired file answers 404 and is swept within a minute, unless a running
    batch still reads it (ingress.batch.file_sweep). A virtual key's live files may total
    ``AIGW_FILES_QUOTA_BYTES``; past it the upload is a 400 ``storage_quota_exceeded``
    (413 stays for one body too large)."""
    body = await form_body(request)
    try:
        # About a second per 100 MB: off the event loop.
        parts = await asyncio.to_thread(
            form.parse, request.headers.get("content-type", ""), body)
    except form.FormError as exc:
        raise invalid(str(exc), code="invalid_form") from None
    del body
    purpose = parts.get("purpose")
    if purpose is None:
        raise invalid("Missing required parameter: 'purpose'.", param="purpose")
    purpose_text = purpose.data.decode(errors="replace").strip()
    if purpose_text not in FILE_PURPOSES:
        raise invalid(f"'{purpose_text}' is not one of {sorted(FILE_PURPOSES)} - 'purpose'",
                      param="purpose")
    upload = parts.get("file")
    if upload is None or upload.filename is None:
        raise invalid("Missing required parameter: 'file'.", param="file")
    if len(upload.data) > MAX_FILE_BYTES:
        raise _too_large()
    if not upload.data:
        raise invalid("The file is empty.", param="file", code="empty_file")
    now = int(time.time())
    try:
        expires_at = file_expiry(purpose_text, now, _field(parts, "expires_after[anchor]"),
                                 _field(parts, "expires_after[seconds]"))
    except ExpiryError as exc:
        raise invalid(str(exc), param=exc.param) from None
    owner = owner_of(request.state.principal)
    await _within_quota(store, owner, len(upload.data), gateway.settings.files_quota_bytes)
    record = FileRecord(
        file=FileObject(id=f"file-{uuid.uuid4().hex}", bytes=len(upload.data),
                        created_at=now, filename=upload.filename or "upload",
                        purpose=purpose_text, expires_at=expires_at),
        owner=owner,
    )
    await store.put_file(record, upload.data)
    return record.file


def _field(parts: dict[str, form.Part], name: str) -> str | None:
    part = parts.get(name)
    return None if part is None else part.data.decode(errors="replace")


async def _within_quota(store: BatchStore, owner: str | None, size: int, quota: int) -> None:
    """Refuse an upload that would take a key past its storage quota (live files only).
    Two uploads racing may pass together: the quota bounds storage, it is no ledger."""
    if owner is None or quota == 0:
        return
    now = time.time()
    used = sum(r.file.bytes for r in await store.files()
               if r.owner == owner and not r.expired(now))
    if used + size > quota:
        raise invalid(f"This upload of {size:,} bytes would take the key's files to "
                      f"{used + size:,} bytes, past its storage quota of {quota:,} bytes. "
                      "Delete files (or let them expire) first.", param="file",
                      code="storage_quota_exceeded")


@router.get("/files")
async def list_files(
    request: Request, store: StoreDep, purpose: str | None = None, limit: int = 10_000,
    order: str = "desc", after: str | None = None,
) -> dict[str, Any]:
    if not 1 <= limit <= 10_000:
        raise invalid("limit must be between 1 and 10000.", param="limit")
    if order not in ("asc", "desc"):
        raise invalid("order must be 'asc' or 'desc'.", param="order")
    principal: Principal = request.state.principal
    now = time.time()
    files = sorted((r.file for r in await store.files()
                    if may_see(principal, r.owner) and not r.expired(now)
                    and (purpose is None or r.file.purpose == purpose)),
                   key=lambda f: (f.created_at, f.id), reverse=order == "desc")
    if after is not None:
        ids = [f.id for f in files]
        files = files[ids.index(after) + 1:] if after in ids else []
    page = files[:limit]
    return {"object": "list", "data": [f.model_dump() for f in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None, "has_more": len(files) > limit}


@router.get("/files/{file_id}")
async def retrieve(request: Request, store: StoreDep, file_id: str) -> FileObject:
    return (await visible_file(request, store, file_id)).file


@router.get("/files/{file_id}/content")
async def content(request: Request, store: StoreDep, file_id: str) -> Response:
    await visible_file(request, store, file_id)
    data = await store.content(file_id)
    if data is None:
        raise _not_found(file_id)
    return Response(data, media_type="application/octet-stream")


@router.delete("/files/{file_id}")
async def delete(request: Request, store: StoreDep, file_id: str) -> dict[str, Any]:
    await visible_file(request, store, file_id)
    await store.delete_file(file_id)
    return {"id": file_id, "object": "file", "deleted": True}
