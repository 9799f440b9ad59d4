"""Reading a batch input file: items for good files, numbered errors for bad lines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ingress.batch.input import MAX_ERRORS, Caller, ModelRefused, custom_ids, parse
from schemas.config import Deployment, parse_config
from schemas.infer import Endpoint

CONFIG = parse_config({"model_list": [
    {"model_name": "chat", "litellm_params": {"model": "openai/a"}},
    {"model_name": "chat", "litellm_params": {"model": "anthropic/b",
                                              "api_base": "http://x"}},
    {"model_name": "embed", "litellm_params": {"model": "openai/e"}},
    {"model_name": "secret", "litellm_params": {"model": "openai/s"}},
]}, {})
CALLER = Caller(key_id="key-1", team_id="team-1")
CHAT = "/v1/chat/completions"


def resolve(model: str) -> list[Deployment]:
    if model == "secret":
        raise ModelRefused("model_not_allowed", "no")
    return [d for d in CONFIG.deployments if d.model_name == model]


def chat(custom_id: str, model: str = "chat", **body: Any) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT,
                       "body": {"model": model, "messages": [{"role": "user", "content": "hi"}],
                                **body}})


def file(*lines: str) -> bytes:
    return "\n".join(lines).encode() + b"\n"


def test_each_line_becomes_an_item_with_a_deterministic_request_id() -> None:
    parsed = parse(file(chat("a"), "", chat("b", metadata={"team": "x"})),
                   "batch_1", CHAT, CALLER, resolve)
    assert parsed.errors == []
    assert [(q.item.line, q.item.custom_id) for q in parsed.items] == [(1, "a"), (3, "b")]
    first = parsed.items[0].item.request
    assert first.request_id == "batch_1-a"
    assert (first.batch_id, first.key_id, first.team_id) == ("batch_1", "key-1", "team-1")
    assert first.endpoint is Endpoint.CHAT and first.attempt == 0 and not first.stream
    assert parsed.items[1].item.request.metadata == {"team": "x"}
    assert parse(file(chat("a")), "batch_1", CHAT, CALLER, resolve).items[0].item.request == first
    assert parsed.items[0].payload == parsed.items[0].item.model_dump_json().encode()


def test_items_of_a_group_are_spread_over_its_deployments_and_providers() -> None:
    parsed = parse(file(*(chat(f"c{i}") for i in range(4))), "b", CHAT, CALLER, resolve)
    assert sorted({q.provider for q in parsed.items}) == ["anthropic", "openai"]


def test_an_unsafe_custom_id_is_hashed_in_the_request_id() -> None:
    parsed = parse(file(chat("a b\nc")), "b", CHAT, CALLER, resolve)
    rid = parsed.items[0].item.request.request_id
    assert rid.startswith("b-~") and " " not in rid and len(rid) == len("b-~") + 24


@pytest.mark.parametrize(("line", "code"), [
    ("{nope", "invalid_json_line"),
    ('{"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {}}',
     "invalid_request"),
    (chat("x", model="unknown"), "model_not_found"),
    (chat("x", model="secret"), "model_not_allowed"),
    (chat("x", stream=True), "invalid_request"),
    (json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/embeddings",
                 "body": {"model": "embed", "input": "x"}}), "mismatched_endpoint"),
    (json.dumps({"custom_id": "x", "method": "POST", "url": CHAT, "body": {"model": "chat"}}),
     "invalid_request"),
])
def test_a_bad_line_fails_the_batch_with_its_line_number(line: str, code: str) -> None:
    parsed = parse(file(chat("ok"), line), "b", CHAT, CALLER, resolve)
    assert parsed.items == []
    assert [(e.line, e.code) for e in parsed.errors] == [(2, code)]


def test_a_repeated_custom_id_is_an_error() -> None:
    parsed = parse(file(chat("a"), chat("a")), "b", CHAT, CALLER, resolve)
    assert [(e.line, e.code) for e in parsed.errors] == [(2, "duplicate_custom_id")]


def test_an_empty_or_binary_file_is_an_error() -> None:
    assert parse(b"\n\n", "b", CHAT, CALLER, resolve).errors[0].code == "empty_file"
    assert parse(b"\xff\xfe", "b", CHAT, CALLER, resolve).errors[0].code == "invalid_file"


def test_a_line_that_is_not_utf8_is_named() -> None:
    parsed = parse(file(chat("a"), chat("b")).replace(b'"b"', b'"\xff"'), "b", CHAT, CALLER,
                   resolve)
    assert [(e.line, e.code) for e in parsed.errors] == [(2, "invalid_file")]


def test_errors_are_capped() -> None:
    parsed = parse(file(*(["{"] * (MAX_ERRORS + 5))), "b", CHAT, CALLER, resolve)
    assert len(parsed.errors) == MAX_ERRORS


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_a_line_separator_inside_a_json_string_does_not_split_the_line(separator: str) -> None:
    text = f"one{separator}two"
    raw = chat("a", messages=[{"role": "user", "content": text}])
    raw = raw.replace(json.dumps(text), f'"{text}"')  # unescaped, as JSON allows
    assert separator in raw
    parsed = parse(file(raw, chat("b")), "b", CHAT, CALLER, resolve)
    assert parsed.errors == []
    assert [q.item.line for q in parsed.items] == [1, 2]
    assert parsed.items[0].item.request.body["messages"][0]["content"] == text


@pytest.mark.parametrize("control", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e"])
def test_a_control_character_is_one_bad_line_not_two(control: str) -> None:
    raw = chat("a").replace('"hi"', f'"h{control}i"')  # JSON wants it escaped
    parsed = parse(file(raw, chat("b")), "b", CHAT, CALLER, resolve)
    assert [(e.line, e.code) for e in parsed.errors] == [(1, "invalid_json_line")]


def test_a_byte_order_mark_and_crlf_line_ends_are_accepted() -> None:
    data = b"\xef\xbb\xbf" + file(chat("a"), chat("b")).replace(b"\n", b"\r\n")
    parsed = parse(data, "b", CHAT, CALLER, resolve)
    assert parsed.errors == []
    assert [(q.item.line, q.item.custom_id) for q in parsed.items] == [(1, "a"), (2, "b")]


@pytest.mark.parametrize("line", [
    chat("a", messages=[{"role": "user", "content": "x"}]).replace('"x"', '"\\ud800"'),
    chat("a").replace('"a"', '"\\udfff"', 1),
    chat("a", model="x").replace('"x"', '"chat\\ud800"'),
])
def test_a_lone_surrogate_escape_is_a_line_error(line: str) -> None:
    assert "\\ud800" in line or "\\udfff" in line
    parsed = parse(file(chat("ok"), line), "b", CHAT, CALLER, resolve)
    assert parsed.items == []
    assert [e.line for e in parsed.errors] == [2]
    for error in parsed.errors:
        error.model_dump_json()  # the failed batch can be stored


def test_a_request_over_the_message_size_is_a_line_error() -> None:
    big = chat("big", messages=[{"role": "user", "content": "x" * 5000}])
    parsed = parse(file(chat("ok"), big), "b", CHAT, CALLER, resolve, max_payload=4096)
    assert parsed.items == []
    assert [(e.line, e.code) for e in parsed.errors] == [(2, "request_too_large")]
    assert len(parse(file(chat("ok"), big), "b", CHAT, CALLER, resolve,
                     max_payload=16384).items) == 2


def test_custom_ids_are_read_by_line_number() -> None:
    data = b"\xef\xbb\xbf" + file(chat("a"), "", "{bad", chat("b\u2028c"))
    assert custom_ids(data) == {1: "a", 4: "b\u2028c"}


def test_every_bad_line_is_reported_with_its_number_whatever_it_holds() -> None:
    deep = ('{"custom_id": "deep", "method": "POST", "url": "/v1/chat/completions", "body": '
            + "[" * 50_000 + "]" * 50_000 + "}")
    data = file(
        chat("ok-1"),
        deep,                                                             # 2: nesting
        chat("nan").replace('"hi"', '"hi"}], "temperature": NaN, "x": [{"a": 1'),  # 3
        chat("surrogate").replace('"hi"', '"\\ud800"'),                    # 4
        chat("ok-2"),
        chat("bounds", max_tokens=10**12),                                 # 6
        "{not json",                                                       # 7
    )
    parsed = parse(data, "b", CHAT, CALLER, resolve)
    assert sorted(e.line for e in parsed.errors if e.line is not None) == [2, 3, 4, 6, 7], [
        (e.line, e.code, e.message[:60]) for e in parsed.errors]
    # Lines refused as JSON have no custom_id to report (the deep one raised before).
    assert custom_ids(data) == {1: "ok-1", 5: "ok-2", 6: "bounds"}
