"""JSON in and out of a worker: upstream bodies and events read, request bodies and chunk
frames written.

orjson parses and writes the small documents of a call (a completion, a stream's chunks) in
a fraction of the standard library's time, and writes compact UTF-8, as the bus and the
upstreams take it. What orjson refuses and Python's json allows (``NaN``, lone surrogates,
integers past 64 bits to write, keys that are not strings) goes to the standard library
instead, so nothing that parsed or was written before fails now. One difference stays:
orjson reads an integer past 64 bits as a float, as JavaScript does; no field a worker
reads (token counts, timestamps) comes near that.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    """The parsed document; ``ValueError`` when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # raises ValueError where the text is not JSON at all


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, separators=(",", ":")).encode()
