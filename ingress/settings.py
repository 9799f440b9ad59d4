"""Settings of an ingress process, read once from the environment in the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.bus_auth import BusAuth
from ingress.batch.file_sweep import SWEEP_SECONDS
from schemas.batch import MAX_FILE_BYTES
from schemas.media import MAX_UPLOAD_BYTES
from schemas.responses import DEFAULT_TTL_SECONDS
from schemas.subjects import CONFIG_KEY


class IngressSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias="NATS_URL")
    # NATS credentials and TLS (AIGW_NATS_USER, AIGW_NATS_PASSWORD, AIGW_NATS_TLS_*).
    bus: BusAuth = Field(default_factory=BusAuth)
    config_path: Path | None = Field(default=None, validation_alias="AIGW_CONFIG")
    # Hot reload (ingress/config/reload.py): the file is checked this often (0: only on
    # SIGHUP or POST /admin/config/reload), and shared through NATS KV under this key.
    config_watch_interval: float = Field(
        default=1.0, ge=0, validation_alias="AIGW_CONFIG_WATCH_INTERVAL")
    config_key: str = Field(default=CONFIG_KEY, pattern=r"^[-_=.a-zA-Z0-9]+$",
                            validation_alias="AIGW_CONFIG_KEY")
    server_root_path: str = Field(default="", validation_alias="SERVER_ROOT_PATH")
    # How long a console sign-in lasts (ingress/console/sessions.py).
    console_session_seconds: float = Field(
        default=8 * 3600, gt=0, validation_alias="AIGW_CONSOLE_SESSION_SECONDS")
    # A bearer token GET /metrics must carry (unset: open, as Prometheus expects).
    metrics_key: str | None = Field(default=None, validation_alias="AIGW_METRICS_KEY")
    # The other processes' metrics endpoints, for GET /health/targets (aigw up sets it):
    # a JSON list of {"role", "provider", "url"}.
    metrics_targets: str | None = Field(default=None, validation_alias="AIGW_METRICS_TARGETS")
    # How often each team's budget use is read for aigw_budget_utilization_ratio.
    budget_metrics_interval: float = Field(
        default=15.0, gt=0, validation_alias="AIGW_BUDGET_METRICS_INTERVAL")
    # An idle client connection is closed after this long. Longer than the idle expiry of
    # common client pools (httpx and the openai SDK 5 s, aiohttp 15 s, undici 4 s) and of
    # load balancers (60 s), so that the client always closes first: with equal timers a
    # request sent just as the server closes its connection ends in a reset.
    keep_alive: int = Field(default=75, ge=1, validation_alias="AIGW_KEEP_ALIVE")
    # One log line per request (method, route, status, duration, model, key id).
    access_log: bool = Field(default=False, validation_alias="AIGW_ACCESS_LOG")
    # A worker heartbeats an idle attempt this often; the ingress gives up on a worker
    # that stays silent for heartbeat_timeout.
    heartbeat_interval: float = Field(default=2.0, gt=0, validation_alias="AIGW_HEARTBEAT")
    heartbeat_timeout: float = Field(default=6.0, gt=0, validation_alias="AIGW_HEARTBEAT_TIMEOUT")
    # Usage events not yet acknowledged by JetStream are kept here, and replayed on start.
    spool_dir: Path | None = Field(default=None, validation_alias="AIGW_SPOOL_DIR")
    # How long a call waits for a worker when every worker of its provider is full, before
    # a 503 no_capacity (never beyond the request's own deadline).
    capacity_wait: float = Field(default=10.0, ge=0, validation_alias="AIGW_CAPACITY_WAIT")
    # /openapi.json and /docs: "key" (the schema for any valid key, no /docs), "public",
    # "off" (ingress.routes.api_docs).
    api_docs: Literal["key", "public", "off"] = Field(default="key",
                                                       validation_alias="AIGW_API_DOCS")
    # Request bodies are refused (413) past these, while they stream in (ingress.body_limit).
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024,
                                   validation_alias="AIGW_MAX_REQUEST_BYTES")
    max_file_bytes: int = Field(default=MAX_FILE_BYTES, ge=1024, le=MAX_FILE_BYTES,
                                validation_alias="AIGW_MAX_FILE_BYTES")
    max_other_bytes: int = Field(default=1024 * 1024, ge=1024,
                                 validation_alias="AIGW_MAX_OTHER_BYTES")
    # An audio file or image uploaded to /v1/audio/* or /v1/images/edits (OpenAI: 25 MB).
    max_media_bytes: int = Field(default=MAX_UPLOAD_BYTES, ge=1024,
                                 validation_alias="AIGW_MAX_MEDIA_BYTES")
    # A running batch whose items wait only on providers with no worker for this long is
    # finished, each line left with a no_worker error line (0: it waits for its window).
    batch_no_worker_seconds: float = Field(default=900.0, ge=0,
                                           validation_alias="AIGW_BATCH_NO_WORKER_SECONDS")
    # A stream's frames waiting for a client that reads slowly: past this many bytes the
    # upstream call is cancelled and the stream ends with a client_too_slow error.
    stream_buffer_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024,
                                     validation_alias="AIGW_STREAM_BUFFER_BYTES")
    # The most bytes of live (unexpired, undeleted) uploads one virtual key may hold; 0:
    # no limit. The master key's uploads are not counted.
    files_quota_bytes: int = Field(default=10 * 1024**3, ge=0,
                                   validation_alias="AIGW_FILES_QUOTA_BYTES")
    # How often each replica deletes the expired files (record and contents), in seconds.
    files_sweep_seconds: float = Field(default=SWEEP_SECONDS, gt=0,
                                       validation_alias="AIGW_FILES_SWEEP_SECONDS")
    # How long a stored Responses API response (store: true, the default) can be read and
    # continued with previous_response_id: the NATS KV bucket's age limit, in seconds.
    responses_ttl: float = Field(default=DEFAULT_TTL_SECONDS, gt=0,
                                 validation_alias="AIGW_RESPONSES_TTL")
    # Shared rate limits, spend and reservations. Without it: in-process (one replica).
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    # Redis down: "closed" refuses with 503, "open" falls back to in-process limits.
    on_redis_error: Literal["closed", "open"] = Field(
        default="closed", validation_alias="AIGW_ON_REDIS_ERROR")
    # What a request without max_tokens may produce, for its budget reservation.
    default_max_output_tokens: int = Field(
        default=4096, ge=1, validation_alias="AIGW_DEFAULT_MAX_OUTPUT_TOKENS")
    # Response cache (ingress/cache/key.py): off unless a request asks, while the TTL is
    # 0; a TTL > 0 caches every request that does not opt out. Per-request TTLs are capped.
    # A config with ``litellm_settings.cache: true`` sets the default TTL instead.
    cache_ttl: float = Field(default=0.0, ge=0, validation_alias="AIGW_CACHE_TTL")
    cache_max_ttl: float = Field(default=7 * 86400.0, gt=0, validation_alias="AIGW_CACHE_MAX_TTL")
    # "team": a team's (or a teamless key's) entries are its own; "global": shared by all.
    cache_scope: Literal["team", "global"] = Field(
        default="team", validation_alias="AIGW_CACHE_SCOPE")
    # The in-process store without Redis: least recently used entries go first.
    cache_max_entries: int = Field(default=10_000, ge=1, validation_alias="AIGW_CACHE_MAX_ENTRIES")
    # Identical cacheable requests in flight share one upstream call; a follower waits at
    # most this long for the leader before making its own.
    cache_dedup: bool = Field(default=True, validation_alias="AIGW_CACHE_DEDUP")
    cache_dedup_wait: float = Field(
        default=300.0, gt=0, validation_alias="AIGW_CACHE_DEDUP_WAIT")
    budget_webhook_url: str | None = Field(default=None, validation_alias="AIGW_BUDGET_WEBHOOK_URL")
    # How often live spend counters are raised to ClickHouse's figures (admission/spend_seed.py).
    spend_seed_interval: float = Field(
        default=60.0, gt=0, validation_alias="AIGW_SPEND_SEED_INTERVAL")
    host: str = Field(default="0.0.0.0", validation_alias="AIGW_HOST")
    port: int = Field(default=4000, validation_alias="AIGW_PORT")

    @field_validator("server_root_path")
    @classmethod
    def _normalise_root(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith("/"):
            value = "/" + value
        return value
