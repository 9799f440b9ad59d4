"""Every NATS subject, queue group and stream name, built in one place."""

from __future__ import annotations

PREFIX = "aigw.v1"

USAGE_STREAM = "AIGW_USAGE"
USAGE_SUBJECTS = f"{PREFIX}.usage.>"


def infer(provider: str) -> str:
    """Subject an ingress publishes one attempt to, for workers of ``provider``."""
    return f"{PREFIX}.infer.{provider}"


def worker_queue(provider: str) -> str:
    """Queue group shared by every worker of one provider, so each attempt runs once."""
    return f"workers.{provider}"


def cancel(request_id: str) -> str:
    """Subject that tells whichever worker runs ``request_id`` to abandon it."""
    return f"{PREFIX}.cancel.{request_id}"


CANCEL_ALL = f"{PREFIX}.cancel.*"


def usage(provider: str) -> str:
    """JetStream subject of usage events for calls made through ``provider``."""
    return f"{PREFIX}.usage.{provider}"


def ping(provider: str) -> str:
    """Subject a worker of ``provider`` answers, so readiness can tell one is there."""
    return f"{PREFIX}.ping.{provider}"


def cancel_request_id(subject: str) -> str:
    """The request id a cancel subject names."""
    return subject.rsplit(".", 1)[-1]


def dedup_done(cache_key: str) -> str:
    """Subject on which the replica leading an in-flight call for ``cache_key`` says it
    ended: ``stored`` (read the answer from the shared cache) or ``failed``."""
    return f"{PREFIX}.dedup.{cache_key}"


# The audit log (schemas/audit.py): one event per admin action, a stream of its own so
# it is kept (and consumed) apart from usage, on a subject per target kind.
AUDIT_STREAM = "AIGW_AUDIT"
AUDIT_SUBJECTS = f"{PREFIX}.audit.>"


def audit(target_kind: str) -> str:
    """JetStream subject of audit events about a ``target_kind`` (key, team, config, batch)."""
    return f"{PREFIX}.audit.{target_kind}"


ANALYTICS_PREFIX = f"{PREFIX}.analytics"
ANALYTICS_ALL = f"{ANALYTICS_PREFIX}.*"


def analytics(query: str) -> str:
    """Subject the accounting service answers analytics ``query`` on (request/reply)."""
    return f"{ANALYTICS_PREFIX}.{query}"


# The gateway config file as published by an ingress (see ``schemas.config_doc``): one KV
# entry per gateway, named by ``AIGW_CONFIG_KEY``; a few revisions kept for ``nats kv history``.
CONFIG_BUCKET = "aigw_config"
CONFIG_KEY = "gateway"
CONFIG_HISTORY = 5


# The Batch API (``schemas.batch``): one work-queue message per input line, on a subject
# per provider and batch, so a cancel can purge one batch's items that have not started.
BATCH_STREAM = "AIGW_BATCH"
BATCH_SUBJECTS = f"{PREFIX}.batch.>"
# Batch records (status, counts, cancel), item results, uploaded files and their bytes.
BATCH_BUCKET = "aigw_batches"
BATCH_RESULTS_BUCKET = "aigw_batch_results"
# Not in the results bucket: the finalizer counts and reads every key there as a result.
BATCH_RUNS_BUCKET = "aigw_batch_runs"
FILES_BUCKET = "aigw_files"
FILES_OBJECTS = "aigw_files"
# Stored Responses API responses, for previous_response_id (ingress/response_store.py).
RESPONSES_BUCKET = "aigw_responses"
# Console sign-ins (ingress/console/sessions.py): a record per session, ended by its TTL.
CONSOLE_BUCKET = "aigw_console_sessions"
# Images and audio in flight (uploads, large answers): schemas/media.py, core/media_store.py.
MEDIA_OBJECTS = "aigw_media"
# The semantic cache (ingress/cache/semantic_store.py): vectors and answers, per scope.
SEMANTIC_CACHE_BUCKET = "aigw_semantic_cache"


def batch_items(provider: str, batch_id: str) -> str:
    """Subject of ``batch_id``'s items for workers of ``provider``."""
    return f"{PREFIX}.batch.{provider}.{batch_id}"


def batch_provider_items(provider: str) -> str:
    """Every batch item for ``provider``: the filter of its workers' pull consumer."""
    return f"{PREFIX}.batch.{provider}.>"


def batch_consumer(provider: str) -> str:
    """The durable pull consumer that ``provider``'s workers share."""
    return f"batch-{provider}"


# Batch items are admitted like interactive calls (rate limits, budgets) by an ingress:
# a worker asks on ADMIT (request/reply, one ingress of the queue group answers) and
# settles on the subject that ingress named in its answer, where it holds the ticket.
ADMIT = f"{PREFIX}.admit.batch"
ADMIT_QUEUE = "ingress-admit"
SETTLE_PREFIX = f"{PREFIX}.admit.settle"


def settle(replica: str) -> str:
    """Where the ingress replica ``replica`` takes the settlements of what it admitted."""
    return f"{SETTLE_PREFIX}.{replica}"
