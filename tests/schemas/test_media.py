"""The media contract's pure parts: speech content types, WAV durations, file references."""

from __future__ import annotations

import struct
from decimal import Decimal

import pytest

from schemas.media import FILES_KEY, MediaFile, files_of, speech_content_type, wav_seconds


def wav(seconds: float, rate: int = 16_000) -> bytes:
    frames = int(seconds * rate)
    data = b"\0\0" * frames
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt "
            + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def test_wav_duration_from_its_header() -> None:
    assert wav_seconds(wav(2.5)) == Decimal("2.5")


def test_a_truncated_wav_counts_what_is_there() -> None:
    assert wav_seconds(wav(2.0)[:44 + 32_000]) == Decimal(1)


@pytest.mark.parametrize("data", [b"", b"ID3\x03junk", b"RIFF\0\0\0\0WAVEjunk"])
def test_anything_else_has_no_wav_duration(data: bytes) -> None:
    assert wav_seconds(data) is None


@pytest.mark.parametrize(("fmt", "ctype"), [
    (None, "audio/mpeg"), ("mp3", "audio/mpeg"), ("opus", "audio/opus"),
    ("wav", "audio/wav"), ("pcm", "audio/pcm"), ("flac", "audio/flac"),
])
def test_speech_content_type(fmt: str | None, ctype: str) -> None:
    assert speech_content_type(fmt) == ctype


def test_files_are_listed_under_their_key() -> None:
    ref = MediaFile(field="file", name="m/1/file", filename="a.wav", size=3)
    assert files_of({FILES_KEY: [ref.model_dump()]}) == [ref]
    assert files_of({}) == []
