"""What every section of the config file shares: the error that stops start-up, and
checks on single values."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration that cannot be served. The message names the offending entry."""


def seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or (
            value == float("inf")):
        raise ConfigError(f"{where}: expected a number of seconds above 0, got {value!r}")
    return float(value)
