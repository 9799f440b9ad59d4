"""``aigw``: the one command for every process of the gateway."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from schemas.config import ConfigError, GatewayConfig, load_config


def _load(path: Path | None) -> GatewayConfig:
    try:
        config = load_config(str(path) if path else None, os.environ)
    except ConfigError as exc:
        print(f"aigw: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if config.ignored:
        print(f"aigw: accepted but not acted on: {', '.join(config.ignored)}", file=sys.stderr)
    return config


def _telemetry(role: str) -> None:
    """Logs in the chosen format, and traces when the OTEL_* environment asks for them."""
    from core.telemetry import logs, tracing

    role = "ingress" if role == "up" else role  # aigw up serves the ingress in-process
    logs.configure(role)
    if role in tracing.SERVICE_NAMES:
        tracing.setup(role)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run a process's main coroutine on uvloop, as uvicorn runs the ingress."""
    import uvloop

    from core.telemetry import tracing

    try:
        uvloop.run(main)
    finally:
        tracing.shutdown()


def cmd_up(args: argparse.Namespace) -> int:
    from cli.embedded import run_embedded
    from ingress.settings import IngressSettings

    config = _load(args.config)
    settings = IngressSettings(
        AIGW_CONFIG=args.config, AIGW_HOST=args.host, AIGW_PORT=args.port,
    )
    return run_embedded(settings, config, Path(args.data_dir).resolve())


def cmd_ingress(args: argparse.Namespace) -> int:
    import uvicorn

    from cli.process import GracefulServer
    from ingress.app import create_app
    from ingress.settings import IngressSettings

    settings = IngressSettings()
    if args.config:
        settings = settings.model_copy(update={"config_path": args.config})
    if args.host:
        settings = settings.model_copy(update={"host": args.host})
    if args.port:
        settings = settings.model_copy(update={"port": args.port})
    config = _load(settings.config_path)
    server = GracefulServer(uvicorn.Config(
        create_app(settings, config), host=settings.host, port=settings.port,
        log_level="warning", access_log=False, timeout_keep_alive=settings.keep_alive,
    ))
    try:
        server.run()
    finally:
        from core.telemetry import tracing

        tracing.shutdown()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.app import run_worker
    from workers.settings import WorkerSettings

    settings = WorkerSettings()
    updates: dict[str, object] = {}
    if args.provider:
        updates["provider"] = args.provider
    if args.concurrency:
        updates["concurrency"] = args.concurrency
    if args.config:
        updates["config_path"] = args.config
    if args.metrics_port is not None:
        updates["metrics_port"] = args.metrics_port
    settings = settings.model_copy(update=updates)
    config = _load(settings.config_path)
    if settings.provider not in config.providers:
        print(f"aigw: no deployment in the config uses provider {settings.provider!r}",
              file=sys.stderr)
        return 2
    _run(run_worker(settings, config))
    return 0


def cmd_accounting(args: argparse.Namespace) -> int:
    from accounting.app import run_accounting
    from accounting.settings import AccountingSettings

    settings = AccountingSettings()
    if args.data_dir:
        settings = settings.model_copy(update={"data_dir": Path(args.data_dir)})
    if args.metrics_port is not None:
        settings = settings.model_copy(update={"metrics_port": args.metrics_port})
    _run(run_accounting(settings))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="aigw", description="ai-gateway")
    sub = top.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run everything on this machine (embedded mode)")
    up.add_argument("--config", type=Path, default=None)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=4000)
    up.add_argument("--data-dir", default="./data")
    up.set_defaults(func=cmd_up)

    ing = sub.add_parser("ingress", help="run the HTTP ingress against NATS_URL")
    ing.add_argument("--config", type=Path, default=None)
    ing.add_argument("--host", default=None)
    ing.add_argument("--port", type=int, default=None)
    ing.set_defaults(func=cmd_ingress)

    wrk = sub.add_parser("worker", help="run a provider worker against NATS_URL")
    wrk.add_argument("--provider", default=None)
    wrk.add_argument("--concurrency", type=int, default=None)
    wrk.add_argument("--config", type=Path, default=None)
    wrk.add_argument("--metrics-port", type=int, default=None,
                     help="serve /metrics and health here (AIGW_METRICS_PORT; 0: off)")
    wrk.set_defaults(func=cmd_worker)

    acc = sub.add_parser("accounting", help="run the usage consumer and analytics service")
    acc.add_argument("--data-dir", default=None, help="where the embedded ClickHouse lives")
    acc.add_argument("--metrics-port", type=int, default=None,
                     help="serve /metrics and health here (AIGW_METRICS_PORT; 0: off)")
    acc.set_defaults(func=cmd_accounting)

    from cli.admin import register as register_admin

    register_admin(sub)
    from cli.audit import register as register_audit

    register_audit(sub)
    from cli.route import register as register_route

    register_route(sub)
    return top


def _environment() -> None:
    """Settings read where they are used, checked here once so that a bad one stops the
    process with one line instead of a traceback mid-start."""
    from core import replicas

    try:
        replicas.wanted()
    except ValueError as exc:
        print(f"aigw: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _environment()
    _telemetry(args.command)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
