"""The shared JSON codec: orjson's values where orjson answers, the standard library's where
it refuses, and each documented difference between the two as it really is."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from core.json_codec import FastDecodeError, dumps, fast_loads, loads, long_integer

# What orjson reads: loads must give the standard library's values for them.
ORDINARY = [
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":64}',
    b'{"a":1,"a":2}',
    b'{"t":0.1,"u":1e-400,"v":1.7976931348623157e308,"w":-0.0}',
    b'{"emoji":"\\ud83d\\ude00","raw":"\xf0\x9f\x98\x80","esc":"\\u00e9\\n\\t"}',
    b'{"max":18446744073709551615,"min":-9223372036854775808}',
    b"  [1, 2.5, true, false, null, \"s\"]  ",
]


@pytest.mark.parametrize("raw", ORDINARY, ids=range(len(ORDINARY)))
def test_loads_gives_the_standard_librarys_values_for_what_orjson_reads(raw: bytes) -> None:
    expected = json.loads(raw)
    assert json.dumps(loads(raw)) == json.dumps(expected)
    assert json.dumps(loads(raw.decode())) == json.dumps(expected)


@pytest.mark.parametrize(
    "raw", [b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'{"a":"\\ud800"}',
            b'["\\udc00x"]'])
def test_loads_reads_with_the_standard_library_what_orjson_refuses(raw: bytes) -> None:
    with pytest.raises(FastDecodeError):
        fast_loads(raw)
    assert json.dumps(loads(raw)) == json.dumps(json.loads(raw))


def test_loads_reads_nan_as_a_float_nan() -> None:
    value = loads(b'{"a":NaN}')
    assert math.isnan(value["a"])


def test_loads_reads_a_lone_surrogate_escape_as_that_surrogate() -> None:
    assert loads(b'{"a":"\\ud800"}') == {"a": "\ud800"}


def test_loads_reads_an_integer_past_64_bits_as_a_float() -> None:
    value = loads(b'{"n":18446744073709551616,"m":-9223372036854775809}')
    assert value == {"n": 1.8446744073709552e19, "m": -9.223372036854776e18}
    assert isinstance(value["n"], float)
    assert isinstance(value["m"], float)


@pytest.mark.parametrize("raw", [b"", b'{"a":', b'{"a":1}}', b"nope", b'{"a":"\xff"}'])
def test_loads_raises_a_value_error_for_what_is_not_json(raw: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError is the contract
        loads(raw)


def test_the_fast_error_is_a_value_error() -> None:
    assert issubclass(FastDecodeError, ValueError)


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ({"a": [1, 2.5, True, None, "é"]}, '{"a":[1,2.5,true,null,"é"]}'.encode()),
        ({"n": 2**64, "m": -(2**63) - 1}, b'{"n":18446744073709551616,"m":-9223372036854775809}'),
        ({"a": "\ud800"}, b'{"a":"\\ud800"}'),
        ({1: "x", None: "y"}, b'{"1":"x","null":"y"}'),
        ({"a": math.nan, "b": math.inf}, b'{"a":null,"b":null}'),
    ],
    ids=["ordinary", "past-64-bits", "lone-surrogate", "non-string-keys", "nan"],
)
def test_dumps_writes_compact_json(value: Any, written: bytes) -> None:
    assert dumps(value) == written


def test_dumps_of_a_lone_surrogate_reads_back_the_same() -> None:
    assert loads(dumps({"a": "x\udfffy"})) == {"a": "x\udfffy"}


def test_dumps_of_an_integer_past_64_bits_stays_exact() -> None:
    assert json.loads(dumps([10**30])) == [10**30]


def test_dumps_raises_a_type_error_for_what_is_not_json() -> None:
    with pytest.raises(TypeError):
        dumps({"a": object()})


@pytest.mark.parametrize(
    ("raw", "found"),
    [
        (b'{"n":1234567890123456789}', True),  # 19 digits
        (b'{"n":-12345678901234567890}', True),
        (b'{"s":"0000000000000000000"}', True),  # in a string too: the check is cautious
        (b'{"n":123456789012345678}', False),  # 18 digits always fit
        (b'{"n":1.5,"m":123456789}', False),
    ],
)
def test_long_integer_finds_a_run_of_19_digits(raw: bytes, found: bool) -> None:
    assert (long_integer(raw) is not None) is found
