"""What every section of the config file shares: the error that stops start-up, and
checks on single values."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class ConfigError(ValueError):
    """A configuration that cannot be served. The message names the offending entry."""


def seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or (
            value == float("inf")):
        raise ConfigError(f"{where}: expected a number of seconds above 0, got {value!r}")
    return float(value)


def problems(exc: ValidationError) -> str:
    """Pydantic's complaints on one line, without the values it would quote (an api_key
    among them)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
