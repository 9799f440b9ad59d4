"""Settings of a worker process, read once from the environment in ``__main__``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.bus_auth import BusAuth
from schemas.subjects import CONFIG_KEY


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias="NATS_URL")
    # NATS credentials and TLS (AIGW_NATS_USER, AIGW_NATS_PASSWORD, AIGW_NATS_TLS_*).
    bus: BusAuth = Field(default_factory=BusAuth)
    # /metrics, /health/liveliness and /health/readiness on this port (0: off).
    metrics_port: int = Field(default=0, ge=0, le=65535, validation_alias="AIGW_METRICS_PORT")
    metrics_host: str = Field(default="0.0.0.0", validation_alias="AIGW_METRICS_HOST")
    metrics_key: str | None = Field(default=None, validation_alias="AIGW_METRICS_KEY")
    config_path: Path | None = Field(default=None, validation_alias="AIGW_CONFIG")
    # The NATS KV entry the ingress publishes the config under (hot reload).
    config_key: str = Field(default=CONFIG_KEY, validation_alias="AIGW_CONFIG_KEY")
    provider: str = Field(default="mock", validation_alias="AIGW_PROVIDER")
    concurrency: int = Field(default=512, ge=1, validation_alias="AIGW_WORKER_CONCURRENCY")
    max_connections: int = Field(default=1000, ge=1, validation_alias="AIGW_MAX_CONNECTIONS")
    drain_seconds: float = Field(default=30.0, ge=0, validation_alias="AIGW_DRAIN_SECONDS")
    # Batch items are admitted by an ingress (rate limits, budgets) before each attempt.
    # Off only for a worker run without any ingress (some tests).
    batch_admission: bool = Field(default=True, validation_alias="AIGW_BATCH_ADMISSION")
    # Usage events not yet acknowledged by JetStream are kept here, and replayed on start.
    spool_dir: Path | None = Field(default=None, validation_alias="AIGW_SPOOL_DIR")
