"""Who may do what on the NATS bus: the subjects each role publishes and subscribes to.

Three roles connect: the ``ingress`` (HTTP front, admission, keys, batches), the
``worker`` (one provider's upstream calls) and ``accounting`` (usage into ClickHouse,
analytics answers). Each gets only what its code uses, down to the JetStream API calls on
its own streams, KV buckets and object store. A role's replies arrive on an inbox of its
own (``_INBOX.<role>``), so no other role can read them.

Rendered into nats-server's ``authorization`` block by ``cli.bus_config``; the deploy
configs (deploy/nats/nats.conf, deploy/k8s/deps/nats.conf) hold the same rendering, which
the deploy tests check.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import subjects
from schemas.health import HEALTH_BUCKET
from schemas.keys import KEYS_BUCKET, TEAMS_BUCKET

INGRESS = "ingress"
WORKER = "worker"
ACCOUNTING = "accounting"
ROLES = (INGRESS, WORKER, ACCOUNTING)

_API = "$JS.API"


def inbox_prefix(role: str) -> str:
    """Where a role's replies (request/reply, JetStream API, consumer deliveries) arrive."""
    return f"_INBOX.{role}"


@dataclass(frozen=True, slots=True)
class Permissions:
    """Subjects a role may publish to and subscribe to (NATS wildcards), and whether it
    may answer a request it received once, whatever the reply subject (``allow_responses``)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False


def _stream(name: str, *ops: str) -> list[str]:
    """Stream management calls (``INFO``, ``CREATE``, ``UPDATE``, ``PURGE``) on one stream."""
    return [f"{_API}.STREAM.{op}.{name}" for op in ops]


def _reads(stream: str) -> list[str]:
    """Reading a stream: a message by subject or sequence, and the ordered consumers behind
    a KV watch or an object's chunks (created, looked at, deleted, flow-controlled)."""
    return [
        f"{_API}.STREAM.INFO.{stream}",
        f"{_API}.STREAM.MSG.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}", f"{_API}.DIRECT.GET.{stream}.>",
        f"{_API}.CONSUMER.CREATE.{stream}", f"{_API}.CONSUMER.CREATE.{stream}.>",
        f"{_API}.CONSUMER.INFO.{stream}.>", f"{_API}.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _pulls(stream: str) -> list[str]:
    """A durable pull consumer on ``stream``: made once, fetched from, acked."""
    return [
        f"{_API}.CONSUMER.CREATE.{stream}.>", f"{_API}.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"{_API}.CONSUMER.INFO.{stream}.>", f"{_API}.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.ACK.{stream}.>",
    ]


def _kv(bucket: str, *, write: bool, purge: bool = False) -> list[str]:
    """A KV bucket: read and watched, created if missing, written when ``write``,
    purged in bulk (the stream purge API) when ``purge``."""
    stream = f"KV_{bucket}"
    out = [*_reads(stream), *_stream(stream, "CREATE")]
    if write:
        out.append(f"$KV.{bucket}.>")
    if purge:
        out += _stream(stream, "PURGE")
    return out


def _objects(bucket: str) -> list[str]:
    """An object store, read and written; getting an object looks its stream up by name."""
    stream = f"OBJ_{bucket}"
    return [*_reads(stream), *_stream(stream, "CREATE", "PURGE"), f"$O.{bucket}.>",
            f"{_API}.STREAM.NAMES"]


def _media() -> list[str]:
    """The images and audio object store, whose chunks are read by a pull consumer
    (core.media_store)."""
    stream = f"OBJ_{subjects.MEDIA_OBJECTS}"
    return [*_objects(subjects.MEDIA_OBJECTS), f"{_API}.CONSUMER.MSG.NEXT.{stream}.>"]


def _usage_stream() -> list[str]:
    """The usage stream, made or brought up to date by whichever process starts first."""
    return _stream(subjects.USAGE_STREAM, "INFO", "CREATE", "UPDATE")


def _audit_stream() -> list[str]:
    """The audit stream, made or brought up to date by whichever process starts first."""
    return _stream(subjects.AUDIT_STREAM, "INFO", "CREATE", "UPDATE")


def _dedupe(found: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(found))


def permissions(role: str) -> Permissions:
    """What ``role`` may do on the bus."""
    if role == INGRESS:
        return Permissions(
            publish=_dedupe([
                subjects.infer("*"), subjects.cancel("*"), subjects.ping("*"),
                subjects.ANALYTICS_ALL, subjects.dedup_done("*"), subjects.usage("*"),
                subjects.BATCH_SUBJECTS, *_usage_stream(),
                # Audit events of admin actions (schemas/audit.py).
                subjects.AUDIT_SUBJECTS, *_audit_stream(),
                *_stream(subjects.BATCH_STREAM, "INFO", "CREATE", "PURGE"),
                *_kv(KEYS_BUCKET, write=True), *_kv(TEAMS_BUCKET, write=True),
                *_kv(HEALTH_BUCKET, write=True), *_kv(subjects.CONFIG_BUCKET, write=True),
                *_kv(subjects.BATCH_BUCKET, write=True), *_kv(subjects.FILES_BUCKET, write=True),
                *_kv(subjects.CONSOLE_BUCKET, write=True),
                *_kv(subjects.SEMANTIC_CACHE_BUCKET, write=True),
                # Stored responses; the bucket's age limit follows AIGW_RESPONSES_TTL.
                *_kv(subjects.RESPONSES_BUCKET, write=True),
                *_stream(f"KV_{subjects.RESPONSES_BUCKET}", "UPDATE"),
                *_kv(subjects.BATCH_RESULTS_BUCKET, write=False, purge=True),
                *_kv(subjects.BATCH_RUNS_BUCKET, write=False, purge=True),
                *_objects(subjects.FILES_OBJECTS), *_media(),
            ]),
            subscribe=(f"{inbox_prefix(INGRESS)}.>", subjects.ADMIT, subjects.settle("*"),
                       subjects.dedup_done("*")),
            # Answers to the workers' batch admission requests.
            allow_responses=True,
        )
    if role == WORKER:
        return Permissions(
            publish=_dedupe([
                # Frames of an attempt (many per request) and ping answers, to an ingress.
                f"{inbox_prefix(INGRESS)}.>",
                subjects.usage("*"), subjects.ADMIT, subjects.settle("*"), *_usage_stream(),
                # A batch item routed to another provider is handed to its queue.
                subjects.BATCH_SUBJECTS,
                *_stream(subjects.BATCH_STREAM, "INFO", "CREATE"), *_pulls(subjects.BATCH_STREAM),
                *_kv(subjects.BATCH_BUCKET, write=False),
                *_kv(subjects.BATCH_RESULTS_BUCKET, write=True),
                *_kv(subjects.BATCH_RUNS_BUCKET, write=True),
                *_kv(subjects.CONFIG_BUCKET, write=False),
                # Uploaded audio and images read, large answers written (schemas/media.py).
                *_media(),
            ]),
            subscribe=(f"{inbox_prefix(WORKER)}.>", subjects.infer("*"), subjects.CANCEL_ALL,
                       subjects.ping("*")),
        )
    if role == ACCOUNTING:
        return Permissions(
            publish=_dedupe([
                *_usage_stream(), *_pulls(subjects.USAGE_STREAM),
                *_audit_stream(), *_pulls(subjects.AUDIT_STREAM),
                f"{_API}.STREAM.MSG.GET.{subjects.USAGE_STREAM}",
                f"{_API}.DIRECT.GET.{subjects.USAGE_STREAM}",
            ]),
            subscribe=(f"{inbox_prefix(ACCOUNTING)}.>", subjects.ANALYTICS_ALL),
            # One answer to each analytics request, on the asker's inbox.
            allow_responses=True,
        )
    raise ValueError(f"unknown bus role {role!r}: one of {', '.join(ROLES)}")
