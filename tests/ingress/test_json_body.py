"""The request body parser: orjson's fast path must accept and refuse exactly what the
standard library's path does, with the same values and the same messages."""

from __future__ import annotations

import json

import pytest

from ingress import json_body
from ingress.json_body import MAX_DEPTH, BadJson

ACCEPTED = [
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":64}',
    b'{"a":1,"a":2}',  # the last duplicate wins, as in the standard library
    b'{"seed":123456789012345678901234567890}',  # past 64 bits: stays an exact int
    b'{"seed":-9223372036854775809,"n":18446744073709551616}',
    b'{"t":0.1,"u":1e-400,"v":1.7976931348623157e308,"w":-0.0}',
    b'{"emoji":"\\ud83d\\ude00","raw":"\xf0\x9f\x98\x80","esc":"\\u00e9\\n\\t"}',
    b'[' * MAX_DEPTH + b']' * MAX_DEPTH,
    b'{"x":' * (MAX_DEPTH - 1) + b"1" + b"}" * (MAX_DEPTH - 1),
    b'{"messages":[' + b",".join(b'{"role":"user","content":"a"}' for _ in range(200)) + b"]}",
    b"  [1, 2.5, true, false, null, \"s\"]  ",
]

REFUSED = [
    (b'{"a":1e999}', "The number 1e999 is too large."),
    (b'{"a":-1E400}', "The number -1E400 is too large."),
    (b'{"a":NaN}', "`NaN` is not a JSON value; send a finite number."),
    (b'{"a":Infinity}', "`Infinity` is not a JSON value; send a finite number."),
    (b'{"a":"\\ud800"}', "A string holds a lone surrogate"),
    (b'{"a":"\\udc00x"}', "A string holds a lone surrogate"),
    (b'{"a":"\xff"}', "The body is not valid UTF-8."),
    (b'[' * (MAX_DEPTH + 1) + b']' * (MAX_DEPTH + 1), f"nests deeper than {MAX_DEPTH}"),
    (b'{"x":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), f"deeper than {MAX_DEPTH}"),
    (b'[' * 2000 + b']' * 2000, f"nests deeper than {MAX_DEPTH}"),
    (b'{"a":', "We could not parse the JSON body"),
    (b"", "We could not parse the JSON body"),
    (b'{"a":1}}', "We could not parse the JSON body"),
]


@pytest.mark.parametrize("raw", ACCEPTED, ids=range(len(ACCEPTED)))
def test_the_fast_path_gives_the_standard_librarys_values(raw: bytes) -> None:
    value = json_body.parse(raw)
    expected = json.loads(raw.decode())
    assert value == expected
    # Same types too: an int stays an int, a float a float.
    assert json.dumps(value) == json.dumps(expected)
    assert json_body.loads(raw.decode()) == expected


@pytest.mark.parametrize(("raw", "message"), REFUSED, ids=range(len(REFUSED)))
def test_what_is_refused_is_refused_with_the_same_message(raw: bytes, message: str) -> None:
    with pytest.raises(BadJson, match=message.replace("(", r"\(").replace(")", r"\)")):
        json_body.parse(raw)
