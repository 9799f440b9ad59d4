"""``aigw up``: NATS, workers and the ingress on one machine, in one command."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import uvicorn

from cli.bus_config import EmbeddedCredentials
from cli.nats_server import NatsServer, free_port
from cli.process import GracefulServer, child_preexec
from cli.supervisor import Supervisor
from ingress.app import create_app
from ingress.settings import IngressSettings
from schemas.bus_roles import ACCOUNTING, INGRESS, WORKER
from schemas.config import GatewayConfig

log = logging.getLogger("aigw")


def start_worker(
    provider: str, nats_url: str, config_path: Path | None, metrics_port: int = 0,
    bus_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NATS_URL": nats_url, "AIGW_PROVIDER": provider,
           "AIGW_METRICS_PORT": str(metrics_port), **(bus_env or {})}
    if config_path is not None:
        env["AIGW_CONFIG"] = str(config_path)
    else:
        env.pop("AIGW_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "worker", "--provider", provider],
        env=env,
        preexec_fn=child_preexec,
        start_new_session=True,
    )


def start_accounting(
    nats_url: str, data_dir: Path, metrics_port: int = 0, bus_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    # Its own process: it owns the chDB store, which one process at a time may open.
    env = {**os.environ, "NATS_URL": nats_url, "AIGW_DATA_DIR": str(data_dir),
           "AIGW_METRICS_PORT": str(metrics_port), **(bus_env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "accounting"],
        env=env,
        preexec_fn=child_preexec,
        start_new_session=True,
    )


def stop_children(children: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_embedded(
    settings: IngressSettings, config: GatewayConfig, data_dir: Path
) -> int:
    # Every process its own NATS user and permissions (schemas/bus_roles.py).
    bus = EmbeddedCredentials.load_or_create(data_dir)
    nats_server = NatsServer(data_dir / "nats", extra_config=bus.authorization())
    nats_server.start()
    settings = settings.model_copy(update={"bus": bus.auth(INGRESS)})
    # Usage events not yet in JetStream survive a child's death in a spool per process.
    spool_dir = settings.spool_dir or data_dir / "spool"
    os.environ["AIGW_SPOOL_DIR"] = str(spool_dir)
    settings = settings.model_copy(update={"nats_url": nats_server.url, "spool_dir": spool_dir})
    config_path = settings.config_path.resolve() if settings.config_path else None
    # Each child serves /metrics on a port of its own, listed at GET /health/targets.
    targets: list[dict[str, str | None]] = []
    # Every child is restarted when it dies (cli/supervisor.py), nats-server included.
    supervisor = Supervisor()
    supervisor.add("nats", lambda: _restart_nats(nats_server), nats_server.process)
    for provider in config.providers:
        port = free_port()
        supervisor.add(f"worker:{provider}", functools.partial(
            start_worker, provider, nats_server.url, config_path, port, bus.env(WORKER)))
        targets.append({"role": "worker", "provider": provider,
                        "url": f"http://127.0.0.1:{port}/metrics"})
    port = free_port()
    supervisor.add("accounting", functools.partial(
        start_accounting, nats_server.url, data_dir, port, bus.env(ACCOUNTING)))
    targets.append({"role": "accounting", "provider": None,
                    "url": f"http://127.0.0.1:{port}/metrics"})
    settings = settings.model_copy(update={"metrics_targets": json.dumps(targets)})
    supervisor.start()
    try:
        app = create_app(settings, config, supervisor.status)
        server = GracefulServer(
            uvicorn.Config(
                app, host=settings.host, port=settings.port, log_level="warning",
                access_log=False, lifespan="on",
                timeout_keep_alive=settings.keep_alive,
            )
        )
        where = f"http://{settings.host}:{settings.port}{settings.server_root_path}"
        print(f"ai-gateway listening on {where}", flush=True)
        print(f"  OpenAI base URL: {where}/v1", flush=True)
        print(f"  models: {', '.join(config.model_names)}", flush=True)
        print(f"  NATS: {nats_server.url} (data in {data_dir})", flush=True)
        store = os.environ.get("CLICKHOUSE_URL") or f"chdb://{data_dir / 'clickhouse'}"
        print(f"  usage analytics: {where}/v1/usage/summary (ClickHouse: {store})", flush=True)
        if config.master_key is None:
            print("  no master key set: every caller is allowed (local use only)", flush=True)
        server.run()
        return 0
    finally:
        supervisor.stop()
        stop_children([p for p in supervisor.processes() if p is not nats_server.process])
        nats_server.stop()
        supervisor.close()


def _restart_nats(server: NatsServer) -> subprocess.Popen[bytes]:
    server.start()
    assert server.process is not None
    return server.process
