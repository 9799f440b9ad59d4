"""The multipart/form-data reader behind ``POST /v1/files``."""

from __future__ import annotations

import pytest

from ingress.routes import form

TYPE = "multipart/form-data; boundary=XyZ"
WHOLE = (b'--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
         b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
         b'Content-Type: application/octet-stream\r\n\r\n{"a": 1}\n{"b": 2}\n\r\n--XyZ--\r\n')


def test_a_whole_form_gives_its_parts() -> None:
    parts = form.parse(TYPE, WHOLE)
    assert parts["purpose"].data == b"batch"
    assert (parts["file"].filename, parts["file"].data) == ("a.jsonl", b'{"a": 1}\n{"b": 2}\n')


@pytest.mark.parametrize("cut", [150, 120, len(WHOLE) - 9, len(WHOLE) - 3])
def test_a_form_cut_short_is_refused(cut: int) -> None:
    with pytest.raises(form.FormError, match="truncated or malformed"):
        form.parse(TYPE, WHOLE[:cut])


@pytest.mark.parametrize("body", [b"garbage", b"", b"--other\r\n\r\nx\r\n--other--\r\n"])
def test_a_body_that_is_no_form_is_refused(body: bytes) -> None:
    with pytest.raises(form.FormError):
        form.parse(TYPE, body)


def _form(*parts: bytes, boundary: bytes = b"XyZ", preamble: bytes = b"") -> bytes:
    body = preamble
    for part in parts:
        body += b"--" + boundary + b"\r\n" + part + b"\r\n"
    return body + b"--" + boundary + b"--\r\n"


AUDIO = bytes(range(256)) * 64 + b"\r\n--XyZ not quite a boundary\r\n--XyZa\r\n--XyZ--x"
PLAIN_FORMS = [
    _form(b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1',
          b'Content-Disposition: form-data; name="file"; filename="my talk.wav"\r\n'
          b"Content-Type: audio/wav\r\n\r\n" + AUDIO),
    _form(b'Content-Disposition: form-data; name="file"; filename="caf\xc3\xa9.mp3"\r\n\r\n'
          b"ID3", b'Content-Disposition: form-data; name="file"; filename="b"\r\n\r\nsecond'),
    _form(b"Content-Disposition: form-data; name=prompt\r\n\r\n", b'content-disposition: '
          b'form-data; name="n"\r\ncontent-type: text/plain; charset=utf-8\r\n\r\n2'),
]


@pytest.mark.parametrize("body", PLAIN_FORMS)
def test_a_plain_form_is_split_fast_exactly_as_email_reads_it(body: bytes) -> None:
    fast = form._split(b"XyZ", body)
    assert fast is not None
    assert fast == form.by_email(TYPE, body)
    assert form.parse(TYPE, body) == fast


@pytest.mark.parametrize("body", [
    _form(b'Content-Disposition: form-data; name="f"\r\n'
          b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8="),
    _form(b'Content-Disposition: form-data; name="f"', preamble=b"a preamble\r\n"),
    _form(b"Content-Disposition: form-data; name*=utf-8''caf%C3%A9\r\n\r\nx"),
    _form(b'Content-Disposition: form-data; name="a\\"b"\r\n\r\nx'),
    WHOLE[:-9],
])
def test_anything_unusual_is_left_to_email(body: bytes) -> None:
    assert form._split(b"XyZ", body) is None


def test_a_transfer_encoded_part_is_decoded_by_email() -> None:
    body = _form(b'Content-Disposition: form-data; name="f"; filename="x"\r\n'
                 b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=")
    assert form.parse(TYPE, body)["f"].data == b"hello"


def test_a_quoted_boundary_is_read() -> None:
    body = _form(b'Content-Disposition: form-data; name="a"\r\n\r\n1', boundary=b"a b")
    assert form.parse('multipart/form-data; boundary="a b"', body)["a"].data == b"1"
