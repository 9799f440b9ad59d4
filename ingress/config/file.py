"""The config file on disk: read once with what identifies that version of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schemas.config import ConfigError, read_config_text
from schemas.config_doc import content_hash


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """The file as read once: its text and what identifies this version of it."""

    text: str
    hash: str
    mtime: float
    size: int


def read_file(path: Path) -> ConfigFile:
    try:
        stat = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    text = read_config_text(str(path))
    return ConfigFile(text, content_hash(text), stat.st_mtime, stat.st_size)


def stat_file(path: Path) -> tuple[int, int] | None:
    """``(mtime_ns, size)``, or None when the file cannot be looked at."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
