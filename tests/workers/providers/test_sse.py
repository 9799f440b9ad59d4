"""Server-sent events read from a body's bytes, however its pieces are cut."""

from __future__ import annotations

import gzip

import httpx
import pytest

from workers.providers.sse import EventParser, ServerEvent, read_events


def parse(*pieces: bytes) -> list[ServerEvent]:
    parser = EventParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    return events + parser.close()


BODY = (
    b": a comment\r\n"
    b"event: message_start\r\n"
    b'data: {"a": 1}\r\n'
    b"\r\n"
    b"id: 7\n"
    b"retry: 100\n"
    b"data:first\n"
    b"data:  second, one space kept\n"
    b"\n"
    b'data: {"text": "caf\xc3\xa9 \xe2\x9c\x93"}\r'
    b"\r"
    b"event: ping\n"
    b"\n"
    b"data\n"
    b"\n"
    b"data: [DONE]"
)
EXPECTED = [
    ServerEvent("message_start", '{"a": 1}'),
    ServerEvent(None, "first\n second, one space kept"),
    ServerEvent(None, '{"text": "café ✓"}'),
    ServerEvent(None, ""),
    ServerEvent(None, "[DONE]"),
]


def test_events_of_a_whole_body() -> None:
    # Comments, ids and retries are skipped; an event with no data ("ping") is not sent;
    # "data" alone is an empty data line; the last event ends with the body.
    assert parse(BODY) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(BODY)))
def test_a_body_cut_anywhere_gives_the_same_events(cut: int) -> None:
    assert parse(BODY[:cut], BODY[cut:]) == EXPECTED


def test_a_body_fed_byte_by_byte_gives_the_same_events() -> None:
    assert parse(*(BODY[i:i + 1] for i in range(len(BODY)))) == EXPECTED


def test_an_event_without_data_is_not_sent_and_its_type_does_not_leak() -> None:
    assert parse(b"event: a\n\ndata: x\n\n") == [ServerEvent(None, "x")]


def test_a_crlf_split_between_pieces_is_one_line_break() -> None:
    assert parse(b"data: a\r", b"\ndata: b\r\n\r\n") == [ServerEvent(None, "a\nb")]


def test_empty_pieces_change_nothing() -> None:
    assert parse(b"", b"data: a\r", b"", b"\n\r\n", b"") == [ServerEvent(None, "a")]


async def test_read_events_decodes_the_content_encoding() -> None:
    body = gzip.compress(b'data: {"x": 1}\n\ndata: [DONE]\n\n')
    response = httpx.Response(200, headers={"content-encoding": "gzip"}, content=body)
    assert [event async for event in read_events(response)] == [
        ServerEvent(None, '{"x": 1}'), ServerEvent(None, "[DONE]")]
