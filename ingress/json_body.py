"""A request's JSON, parsed so that no client input becomes a 500 further down.

Refused with a 400 (``invalid_json``) rather than carried on to fail in serialisation, on
the bus or at the provider:

- bytes that are not UTF-8 (an encoded surrogate among them);
- ``NaN``, ``Infinity`` and numbers too large for a float (``1e999``): JSON has no such
  values and a provider would refuse the request we forwarded;
- a lone surrogate written as an escape (``"\\ud800"``): it has no UTF-8 form;
- nesting deeper than :data:`MAX_DEPTH`.

Used for inference bodies and for each line of a batch input file. Bodies past
:data:`OFF_LOOP_BYTES` are parsed in a thread, so that one large prompt does
not hold up every other request on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from core.json_codec import FastDecodeError, fast_loads, long_integer

MAX_DEPTH = 64
OFF_LOOP_BYTES = 256 * 1024


class BadJson(ValueError):
    pass


def _constant(name: str) -> Any:
    raise BadJson(f"`{name}` is not a JSON value; send a finite number.")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"The number {text[:40]} is too large.")
    return value


def _check(value: Any, surrogates: bool) -> None:
    """Depth, and (when the text has a ``\\u`` escape in the surrogate range) strings."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_DEPTH:
                raise BadJson(f"The JSON nests deeper than {MAX_DEPTH} levels.")
            if surrogates:
                stack.extend((k, depth) for k in node)
            stack.extend((v, depth + 1) for v in node.values()
                         if surrogates or isinstance(v, dict | list))
        elif isinstance(node, list):
            if depth > MAX_DEPTH:
                raise BadJson(f"The JSON nests deeper than {MAX_DEPTH} levels.")
            stack.extend((v, depth + 1) for v in node
                         if surrogates or isinstance(v, dict | list))
        elif surrogates and isinstance(node, str):
            try:
                node.encode()
            except UnicodeEncodeError:
                raise BadJson("A string holds a lone surrogate (such as \\ud800), which "
                              "has no UTF-8 form.") from None


def parse(raw: bytes) -> Any:
    """``raw`` as JSON. orjson first: it refuses what we refuse (invalid UTF-8, lone
    surrogates, ``NaN``, numbers past a double) and parses many times faster; whatever it
    refuses is parsed again by :func:`loads`, which says precisely what is wrong (or
    accepts it: a nesting past orjson's own limit is still only refused past ours)."""
    # A body with an integer that may not fit in 64 bits takes the standard library's path,
    # which keeps it exact.
    if long_integer(raw) is None:
        try:
            value = fast_loads(raw)
        except FastDecodeError:
            pass
        else:
            if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:  # else it cannot nest deeper
                _check(value, surrogates=False)
            return value
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise BadJson("The body is not valid UTF-8.") from None
    return loads(text)


def loads(text: str) -> Any:
    """``text`` as JSON, refused (:class:`BadJson`) as :func:`parse` refuses it."""
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float)
    except RecursionError:
        raise BadJson(f"The JSON nests deeper than {MAX_DEPTH} levels.") from None
    except BadJson:
        raise
    except ValueError:
        raise BadJson("We could not parse the JSON body of your request. Send valid "
                      "JSON.") from None
    _check(value, "\\ud" in text or "\\uD" in text)
    return value


async def parse_off_loop(raw: bytes) -> Any:
    if len(raw) > OFF_LOOP_BYTES:
        return await asyncio.to_thread(parse, raw)
    return parse(raw)
