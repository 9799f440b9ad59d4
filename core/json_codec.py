"""JSON to and from UTF-8 bytes: orjson first, the standard library for what orjson refuses.

orjson parses and writes the small documents of a call many times faster than ``json``, and
writes compact UTF-8, as the bus, the clients and the upstreams take it. Where the two part:

- ``NaN`` and ``Infinity``: orjson refuses to read them, and :func:`loads` reads them with
  the standard library; orjson writes them as ``null``, and so does :func:`dumps`.
- a lone surrogate (``"\\ud800"``): orjson neither reads nor writes one; :func:`loads` and
  :func:`dumps` go to the standard library, which writes it as an ``\\u`` escape.
- an integer past 64 bits: orjson reads it as a float (as JavaScript does) and refuses to
  write it; :func:`dumps` writes it exact. A caller that must keep it exact when reading
  checks :data:`long_integer` first and parses such text with the standard library.
- keys that are not strings: orjson refuses them; :func:`dumps` writes them as ``json`` does.

:data:`fast_loads` and :data:`FastDecodeError` are orjson's own, for a caller whose
fallback has a policy of its own (the ingress refuses what :func:`loads` accepts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

import orjson

# Bound here so that the fast path costs one call, not a wrapper's two.
fast_loads: Final[Callable[[bytes | bytearray | memoryview | str], Any]] = orjson.loads
# A subclass of json.JSONDecodeError, so of ValueError.
FastDecodeError: Final = orjson.JSONDecodeError

# A run of 19 digits: an integer that may not fit in 64 bits, which orjson would read as a
# float. ``long_integer(raw)`` is a match or None.
long_integer: Final[Callable[[bytes], re.Match[bytes] | None]] = re.compile(rb"\d{19}").search


def loads(data: bytes | str) -> Any:
    """The parsed document; ``ValueError`` when it is not JSON."""
    try:
        return fast_loads(data)
    except FastDecodeError:
        return json.loads(data)  # raises ValueError where the text is not JSON at all


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, separators=(",", ":")).encode()
