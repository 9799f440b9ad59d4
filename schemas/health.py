"""Deployment health as every ingress replica shares it, in the NATS KV bucket
``aigw_health``: one entry per deployment that has failed recently or is cooling down."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

HEALTH_BUCKET = "aigw_health"
SCHEMA_VERSION: Literal[1] = 1


class CircuitState(StrEnum):
    CLOSED = "closed"  # serving; recent failures are counted
    OPEN = "open"  # cooling down until ``until``; skipped by plans
    HALF_OPEN = "half_open"  # one probe request is out, leased until ``until``


class HealthEntry(BaseModel):
    """Times are Unix seconds, so replicas on different machines compare them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    deployment_id: str
    state: CircuitState = CircuitState.CLOSED
    fails: tuple[float, ...] = ()
    until: float | None = None
    reason: str | None = None
    updated_at: float = 0.0


def health_key(deployment_id: str) -> str:
    """A KV key for a deployment id: ids hold characters KV keys may not (``#``, ``:``)."""
    return "d_" + hashlib.sha256(deployment_id.encode()).hexdigest()[:32]


# What ``aigw up`` tells the ingress's readiness probe about the processes it supervises:
# per process, ``{"state": "running" | "restarting", "pid", "restarts", "last_exit"}``.
ProcessStatus = Callable[[], dict[str, dict[str, object]]]
