"""The Batch API's wire shapes: OpenAI's ``File`` and ``Batch`` objects, the lines of input
and output files, and our own envelopes for a batch item on the bus and its result.

Life of a batch: ``validating`` (the input file is read line by line) → ``failed`` (bad
lines, listed in ``errors``) or ``in_progress`` (one work-queue message per line) →
``finalizing`` (every line has a result) → ``completed``. A cancel moves an unfinished
batch to ``cancelling`` and, once its items not yet started are dropped, to ``cancelled``
with the results it has.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.infer import Endpoint, InferRequest

SCHEMA_VERSION: Literal[1] = 1

# The batch endpoints this gateway runs, and what each item becomes on the bus.
RESPONSES_ENDPOINT = "/v1/responses"
ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint.CHAT,
    "/v1/embeddings": Endpoint.EMBEDDINGS,
    "/v1/moderations": Endpoint.MODERATIONS,
    "/v1/completions": Endpoint.COMPLETIONS,
    # Each line is translated to a chat request at submit time and each answer back to a
    # Response object when the output file is written (ingress/batch/responses_lines.py).
    RESPONSES_ENDPOINT: Endpoint.CHAT,
}
COMPLETION_WINDOW = "24h"
WINDOW_SECONDS = 24 * 3600
# OpenAI's limits on one input file.
MAX_LINES = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024
FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
# ``expires_after[seconds]`` as OpenAI bounds it: an hour to 30 days after creation. As at
# OpenAI, batch input files expire after 30 days unless told otherwise, other uploads are
# kept until deleted; the gateway's own batch output and error files expire after 30 days.
FILE_EXPIRY_MIN = 3600
FILE_EXPIRY_MAX = 30 * 24 * 3600
DEFAULT_EXPIRY = {"batch": FILE_EXPIRY_MAX, "batch_output": FILE_EXPIRY_MAX}


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


# A batch in one of these has work left for workers or the finalizer.
ACTIVE = frozenset({BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING,
                    BatchStatus.CANCELLING})
# Workers run the items of an ``in_progress`` batch only. Those of a batch still
# ``validating`` wait (the ingress may yet fail it); in any other status the batch is done
# with its items: ``finalizing`` (every line has a result, or it expired and its files are
# being written), ``cancelling`` or a final status. A redelivery arriving then is skipped.
STOPPED = frozenset(BatchStatus) - {BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS}


class FileObject(BaseModel):
    """OpenAI's ``File`` object, as ``/v1/files`` returns it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileRecord(BaseModel):
    """A stored file and who owns it (a key id; None for the master key or anonymous)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    file: FileObject
    owner: str | None = None

    def expired(self, now: float) -> bool:
        return self.file.expires_at is not None and now >= self.file.expires_at


class ExpiryError(ValueError):
    """An ``expires_after`` the API refuses; ``param`` names the form field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def file_expiry(purpose: str, created_at: int, anchor: str | None,
                seconds: str | None) -> int | None:
    """When a new file expires (Unix seconds; None: kept until deleted), from its form's
    ``expires_after[anchor]`` and ``expires_after[seconds]``, or its purpose's default."""
    if anchor is None and seconds is None:
        default = DEFAULT_EXPIRY.get(purpose)
        return None if default is None else created_at + default
    if anchor is None or anchor.strip() != "created_at":
        raise ExpiryError("expires_after[anchor] must be 'created_at'.",
                          "expires_after[anchor]")
    text = "" if seconds is None else seconds.strip()
    if not (text.isascii() and text.isdigit()):
        raise ExpiryError("expires_after[seconds] must be a whole number of seconds.",
                          "expires_after[seconds]")
    # Leading zeros dropped and the length bounded before int(): past 4,300 digits int()
    # raises a ValueError of its own.
    digits = text.lstrip("0") or "0"
    after = int(digits) if len(digits) <= len(str(FILE_EXPIRY_MAX)) else FILE_EXPIRY_MAX + 1
    if not FILE_EXPIRY_MIN <= after <= FILE_EXPIRY_MAX:
        raise ExpiryError(f"expires_after[seconds] must be between {FILE_EXPIRY_MIN} and "
                          f"{FILE_EXPIRY_MAX} (1 hour to 30 days).", "expires_after[seconds]")
    return created_at + after


class RequestCounts(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    object: Literal["list"] = "list"
    data: list[BatchError] = Field(default_factory=list)


class Batch(BaseModel):
    """OpenAI's ``Batch`` object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    input_file_id: str
    completion_window: str = COMPLETION_WINDOW
    status: BatchStatus
    created_at: int
    errors: BatchErrors | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    metadata: dict[str, str] | None = None
    usage: BatchUsage | None = None


class BatchUsage(BaseModel):
    """Token totals of a finished batch (OpenAI's ``usage`` on batches)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_tokens: int = 0
    input_tokens_details: dict[str, int] = Field(
        default_factory=lambda: {"cached_tokens": 0})
    output_tokens: int = 0
    output_tokens_details: dict[str, int] = Field(
        default_factory=lambda: {"reasoning_tokens": 0})
    total_tokens: int = 0


Batch.model_rebuild()


class BatchRecord(BaseModel):
    """A batch as the gateway keeps it (KV ``aigw_batches``): the public object, its owner,
    and the providers its items went to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    batch: Batch
    owner: str | None = None
    team_id: str | None = None
    providers: list[str] = Field(default_factory=list)
    # The ingress replica finishing the batch, and until when (Unix seconds): a lease, so
    # one replica writes the output files and another takes over if it dies.
    claimed_by: str | None = None
    claim_until: float | None = None


class InputLine(BaseModel):
    """One line of an input file (OpenAI's ``BatchRequestInput``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"]
    url: str
    body: dict[str, Any]


class BatchItem(BaseModel):
    """One input line on the work queue, ready to run: ``request`` is the attempt a worker
    makes, its ``request_id`` deterministic so a redelivery accounts under the same id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    batch_id: str
    line: int
    custom_id: str
    request: InferRequest
    # Handed over to another provider's queue this many times (run-time routing), and
    # the deployments it failed on before, so its new worker does not go back to them.
    moves: int = 0
    failed: tuple[str, ...] = ()


class ItemResult(BaseModel):
    """What one item came to (KV ``aigw_batch_results``): ``output`` is the line of the
    output file (``ok``) or of the error file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    line: int
    custom_id: str
    ok: bool
    output: dict[str, Any]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


# ---- ids and keys (pure) ------------------------------------------------------------------

_SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _digest(*parts: str, size: int = 24) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:size]


def item_request_id(batch_id: str, custom_id: str) -> str:
    """The request id of an item, the same on every delivery: usage event ids and upstream
    request ids derive from it, so two items must never share one. A ``custom_id`` unsafe
    in a header or subject is hashed behind a ``~``, which no ``custom_id`` kept as it is
    contains: a hash never equals another item's ``custom_id``."""
    tail = custom_id if _SAFE.fullmatch(custom_id) else f"~{_digest(batch_id, custom_id)}"
    return f"{batch_id}-{tail}"


def item_msg_id(batch_id: str, line: int, moves: int = 0) -> str:
    """``Nats-Msg-Id`` of an item, so a re-submitted item is dropped by JetStream; a move
    has its own, so a worker that dies between handing an item over and acknowledging it
    does not hand it over twice."""
    return f"batch:{batch_id}:{line}" if not moves else f"batch:{batch_id}:{line}:m{moves}"


def output_id(batch_id: str, custom_id: str) -> str:
    return f"batch_req_{_digest(batch_id, custom_id)}"


def result_key(batch_id: str, ok: bool, line: int) -> str:
    """KV key of an item's result; whether it succeeded is in the key, so progress is
    counted from the subjects alone."""
    return f"{batch_id}.{'ok' if ok else 'err'}.{line}"


def results_prefix(batch_id: str) -> str:
    return f"{batch_id}."


def output_file_id(batch_id: str) -> str:
    return f"file-{batch_id}-output"


def error_file_id(batch_id: str) -> str:
    return f"file-{batch_id}-errors"


def output_line(
    batch_id: str, custom_id: str, request_id: str, status_code: int, body: dict[str, Any]
) -> dict[str, Any]:
    """A line of an output or error file for a call that got an HTTP answer."""
    return {
        "id": output_id(batch_id, custom_id),
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body},
        "error": None,
    }


def error_line(batch_id: str, custom_id: str, code: str, message: str) -> dict[str, Any]:
    """A line of the error file for an item that never got an HTTP answer."""
    return {
        "id": output_id(batch_id, custom_id),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


def progress(subjects: list[str]) -> tuple[set[int], set[int]]:
    """The lines with a result (ok, failed) from the result keys of one batch: a line with
    both (two workers raced on a redelivered item) counts as ok."""
    ok: set[int] = set()
    failed: set[int] = set()
    for subject in subjects:
        parts = subject.rsplit(".", 2)
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        (ok if parts[1] == "ok" else failed).add(int(parts[2]))
    return ok, failed - ok
