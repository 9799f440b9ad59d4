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
