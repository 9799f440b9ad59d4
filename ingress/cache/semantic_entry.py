"""One semantic cache entry as stored in the shared bucket, and its key.

The value is laid out so that a replica following the bucket reads the vector without
parsing the answer: ``AIGWSEM1``, the length of a small JSON head (4 bytes, big-endian),
the head (``expires_at``, ``dims``), the vector as float32, then the cached answer's JSON,
read only on a hit. The key is ``<scope>.<hash of the prompt>``: the same prompt in one
scope is one entry, whichever replica stores it first.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass

import numpy as np

from ingress.cache.semantic_index import Vector
from ingress.cache.store import CachedAnswer

MAGIC = b"AIGWSEM1"
_LENGTH = struct.Struct(">I")


class BadEntry(ValueError):
    """A value this version cannot read (another version's, or damaged)."""


@dataclass(frozen=True, slots=True)
class Head:
    scope: str
    expires_at: float
    vector: Vector


def entry_key(scope: str, text: str) -> str:
    return f"{scope}.{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def scope_of_key(key: str) -> str:
    return key.partition(".")[0]


def encode(vector: Vector, expires_at: float, answer: CachedAnswer) -> bytes:
    head = json.dumps({"expires_at": expires_at, "dims": int(vector.shape[0])},
                      separators=(",", ":")).encode()
    return b"".join((MAGIC, _LENGTH.pack(len(head)), head,
                     vector.astype("<f4", copy=False).tobytes(),
                     answer.model_dump_json().encode()))


def _split(key: str, value: bytes) -> tuple[dict[str, object], int]:
    if not value.startswith(MAGIC) or len(value) < len(MAGIC) + _LENGTH.size:
        raise BadEntry(f"{key}: not a semantic cache entry")
    start = len(MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack_from(value, len(MAGIC))
    try:
        head = json.loads(value[start:start + length])
    except ValueError:
        raise BadEntry(f"{key}: unreadable head") from None
    if not isinstance(head, dict):
        raise BadEntry(f"{key}: unreadable head")
    return head, start + length


def decode_head(key: str, value: bytes) -> Head:
    head, at = _split(key, value)
    dims, expires_at = head.get("dims"), head.get("expires_at")
    if not isinstance(dims, int) or dims <= 0 or not isinstance(expires_at, int | float):
        raise BadEntry(f"{key}: bad head {head!r}")
    end = at + 4 * dims
    if len(value) < end:
        raise BadEntry(f"{key}: truncated vector")
    vector = np.frombuffer(value, dtype="<f4", count=dims, offset=at).astype(np.float32)
    return Head(scope_of_key(key), float(expires_at), vector)


def decode_answer(key: str, value: bytes) -> CachedAnswer:
    head, at = _split(key, value)
    dims = head.get("dims")
    if not isinstance(dims, int):
        raise BadEntry(f"{key}: bad head {head!r}")
    try:
        return CachedAnswer.model_validate_json(value[at + 4 * dims:])
    except ValueError as exc:
        raise BadEntry(f"{key}: unreadable answer ({exc})") from None
