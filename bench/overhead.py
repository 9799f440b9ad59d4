"""Overhead of the gateway, and of LiteLLM's proxy, over a fast fake OpenAI upstream.

    .venv/bin/python bench/overhead.py [--duration 10] [--connections 32] [--skip-litellm]

Starts bench/upstream.py, then one target at a time (the upstream itself, ``aigw up``,
LiteLLM's proxy), checks that each answers a non-streamed and a streamed chat request
correctly, and drives it with wrk: non-streamed and streamed (20 content chunks) chat
requests at --connections connections for throughput, then at one connection for
latency. Only one target runs at a time, so none steals CPU from another. Prints a
markdown table and writes it, with every raw number, to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from processes import Service, ServiceError, free_port
from report import (
    UPSTREAM,
    Measurement,
    Request,
    Scenario,
    TargetResult,
    notes,
    raw_table,
    summary_table,
)
from wrk import WrkError, ensure_wrk, run_wrk

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LITELLM_VENV = BENCH_DIR / ".litellm-venv"
MASTER_KEY = "sk-master"
MODEL = "bench"
CONTENT_CHUNKS = 20
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
_MESSAGES = [{"role": "user", "content": "Say hello in twenty words."}]
BODIES: dict[Request, dict[str, object]] = {
    Request.CHAT: {"model": MODEL, "messages": _MESSAGES, "max_tokens": 64},
    Request.STREAM: {
        "model": MODEL,
        "messages": _MESSAGES,
        "max_tokens": 64,
        "stream": True,
        "stream_options": {"include_usage": True},
    },
}


@dataclass
class Target:
    """An HTTP server to measure and the process that serves it."""

    name: str
    chat_url: str
    service: Service
    version: str = ""


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def config_yaml(upstream_port: int) -> str:
    """LiteLLM's config format, which the gateway reads unchanged."""
    return (
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f'      api_base: "http://127.0.0.1:{upstream_port}/v1"\n'
        "      api_key: sk-bench\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )


# --- correctness before speed ---------------------------------------------------------


def check_responses(chat_url: str) -> tuple[list[str], list[str]]:
    """One request of each kind. Returns (errors that void the target, warnings)."""
    errors: list[str] = []
    warnings: list[str] = []
    with httpx.Client(timeout=30.0) as client:
        response = client.post(chat_url, json=BODIES[Request.CHAT], headers=AUTH)
        if response.status_code != 200:
            errors.append(f"non-stream answered HTTP {response.status_code}: {response.text[:300]}")
        else:
            body = response.json()
            content = (body.get("choices") or [{}])[0].get("message", {}).get("content")
            if not content:
                errors.append(f"non-stream answer has no content: {response.text[:300]}")
            if not body.get("usage"):
                warnings.append("non-stream answer has no usage")

        with client.stream("POST", chat_url, json=BODIES[Request.STREAM], headers=AUTH) as stream:
            if stream.status_code != 200:
                stream.read()
                errors.append(f"stream answered HTTP {stream.status_code}: {stream.text[:300]}")
                return errors, warnings
            content_type = stream.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                warnings.append(f"stream content-type is {content_type!r}")
            chunks, usage, done = 0, False, False
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    continue
                event = json.loads(data)
                usage = usage or bool(event.get("usage"))
                chunks += sum(
                    1
                    for choice in event.get("choices", [])
                    if choice.get("delta", {}).get("content")
                )
        if not done:
            errors.append("stream did not end with data: [DONE]")
        if chunks != CONTENT_CHUNKS:
            warnings.append(
                f"stream relayed {chunks} content chunks, upstream sent {CONTENT_CHUNKS}"
            )
        if not usage:
            warnings.append("stream has no usage chunk although include_usage was asked")
    return errors, warnings


# --- measuring ------------------------------------------------------------------------


def measure(target: Target, upstream: Service, args: argparse.Namespace, wrk: str) -> TargetResult:
    result = TargetResult(name=target.name, version=target.version)
    errors, warnings = check_responses(target.chat_url)
    result.notes += warnings
    if errors:
        result.skipped = "wrong answers: " + "; ".join(errors)
        return result

    def one_run(request: Request, connections: int, duration_s: float) -> Measurement:
        threads = 1 if connections == 1 else args.threads
        target_cpu, upstream_cpu = target.service.cpu_seconds(), upstream.cpu_seconds()
        run = run_wrk(
            target.chat_url,
            json.dumps(BODIES[request], separators=(",", ":")),
            connections=connections,
            threads=threads,
            duration_s=duration_s,
            headers=AUTH,
            timeout_s=args.timeout,
            wrk=wrk,
        )
        return Measurement(
            wrk=run,
            target_cpu_s=target.service.cpu_seconds() - target_cpu,
            upstream_cpu_s=upstream.cpu_seconds() - upstream_cpu,
        )

    if args.warmup > 0:
        for request in Request:
            one_run(request, args.connections, args.warmup)
    for connections in (args.connections, 1):
        for request in Request:
            scenario = Scenario(request, connections)
            try:
                measurement = one_run(request, connections, args.duration)
            except WrkError as exc:
                result.notes.append(f"{scenario}: wrk failed: {exc}")
                continue
            result.runs[scenario] = measurement
            run = measurement.wrk
            verdict = f"FAILED: {run.problems()}" if run.failed else run.problems()
            _log(
                f"[{target.name}] {scenario}: {run.requests_per_s:,.0f} req/s, "
                f"p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
                f"{measurement.target_cpu_ms_per_request:.2f} CPU ms/req {verdict}".rstrip()
            )
            if run.failed:
                result.notes.append(f"{scenario}: FAILED run ({run.problems()})")
            elif run.problems():
                result.notes.append(f"{scenario}: {run.problems()}")
            time.sleep(args.pause)
    return result


def run_target(
    target: Target,
    upstream: Service,
    ready_path: str,
    ready_timeout_s: float,
    args: argparse.Namespace,
    wrk: str,
) -> TargetResult:
    """Start a target's process, measure it, stop it; failures become a skipped row."""
    base_url = target.chat_url.removesuffix("/v1/chat/completions")
    service_started = target.service is not upstream
    try:
        if service_started:
            _log(f"[{target.name}] starting: {' '.join(target.service.command)}")
            target.service.start()
        startup_s = target.service.wait_ready(base_url + ready_path, ready_timeout_s)
        _log(f"[{target.name}] ready after {startup_s:.1f} s")
        result = measure(target, upstream, args, wrk)
        result.startup_s = startup_s
        return result
    except ServiceError as exc:
        _log(f"[{target.name}] {exc}")
        return TargetResult(name=target.name, version=target.version, skipped=exc.reason)
    finally:
        if service_started:
            target.service.stop()


# --- the three targets ----------------------------------------------------------------


def default_aigw() -> str:
    local = REPO_DIR / ".venv" / "bin" / "aigw"
    return str(local) if local.exists() else (shutil.which("aigw") or str(local))


def litellm_ready(setup: bool) -> str | None:
    """None when LiteLLM can run, else why not."""
    litellm = LITELLM_VENV / "bin" / "litellm"
    if litellm.exists():
        return None
    if not setup:
        return f"{LITELLM_VENV} is absent: run bench/litellm_setup.sh or pass --setup-litellm"
    _log("installing LiteLLM into bench/.litellm-venv (takes a few minutes)")
    done = subprocess.run(["bash", str(BENCH_DIR / "litellm_setup.sh")], check=False)
    return None if done.returncode == 0 and litellm.exists() else "litellm_setup.sh failed"


def litellm_version() -> str:
    done = subprocess.run(
        [
            str(LITELLM_VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).splitlines()[0] if done.stdout or done.stderr else "?"


def git_revision() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32, help="connections for req/s")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads for the req/s runs")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    parser.add_argument("--timeout", type=float, default=10.0, help="wrk per-request timeout")
    parser.add_argument("--upstream-workers", type=int, default=1)
    parser.add_argument("--skip-gateway", action="store_true")
    parser.add_argument("--aigw", default=default_aigw(), help="path to the aigw command")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument(
        "--setup-litellm", action="store_true", help="create bench/.litellm-venv when it is absent"
    )
    parser.add_argument("--litellm-workers", type=int, default=1)
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = ensure_wrk()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    logs = args.results_dir / f"logs-{stamp}"
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    config = work / "config.yaml"
    upstream_port = free_port()
    config.write_text(config_yaml(upstream_port))
    litellm_skip = "--skip-litellm" if args.skip_litellm else litellm_ready(args.setup_litellm)

    upstream = Service(
        "upstream",
        [
            sys.executable,
            str(BENCH_DIR / "upstream.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(upstream_port),
            "--workers",
            str(args.upstream_workers),
        ],
        logs / "upstream.log",
    )
    results: list[TargetResult] = []
    upstream.start()
    try:
        upstream.wait_ready(f"http://127.0.0.1:{upstream_port}/health", 15)
        direct = Target(UPSTREAM, f"http://127.0.0.1:{upstream_port}/v1/chat/completions", upstream)
        results.append(run_target(direct, upstream, "/health", 15, args, wrk))

        if args.skip_gateway:
            results.append(TargetResult(name="ai-gateway", skipped="--skip-gateway"))
        else:
            port = free_port()
            gateway = Service(
                "ai-gateway",
                [
                    args.aigw,
                    "up",
                    "--config",
                    str(config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(work / "aigw-data"),
                ],
                logs / "ai-gateway.log",
                cwd=work,
            )
            target = Target(
                "ai-gateway",
                f"http://127.0.0.1:{port}/v1/chat/completions",
                gateway,
                version=git_revision(),
            )
            results.append(run_target(target, upstream, "/health/readiness", 60, args, wrk))

        if litellm_skip:
            results.append(TargetResult(name="litellm", skipped=litellm_skip))
        else:
            port = free_port()
            litellm = Service(
                "litellm",
                [
                    str(LITELLM_VENV / "bin" / "litellm"),
                    "--config",
                    str(config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--num_workers",
                    str(args.litellm_workers),
                ],
                logs / "litellm.log",
                # Loopback only: without this LiteLLM retries a download of its price map.
                env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                cwd=work,
            )
            target = Target(
                "litellm",
                f"http://127.0.0.1:{port}/v1/chat/completions",
                litellm,
                version=litellm_version(),
            )
            results.append(run_target(target, upstream, "/health/liveliness", 120, args, wrk))
    finally:
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)

    summary = summary_table(results, args.connections)
    sys.stdout.write(summary + "\n")
    failed = [t.name for t in results if any(m.wrk.failed for m in t.runs.values())]
    if failed:
        sys.stdout.write(f"\nFAILED runs (non-2xx or timeouts): {', '.join(failed)}; see notes\n")
    report = write_report(args, stamp, results, summary, wrk, config_yaml(upstream_port))
    sys.stdout.write(f"\nwritten to {report}\n")
    return 1 if failed else 0


def write_report(
    args: argparse.Namespace,
    stamp: str,
    results: list[TargetResult],
    summary: str,
    wrk: str,
    config: str,
) -> Path:
    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"overhead-{stamp}.md"
    machine = (
        f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
        f"{wrk_version(wrk)}"
    )
    text = "\n\n".join(
        [
            f"# Overhead benchmark {stamp}",
            f"Machine: {machine}. Gateway revision {git_revision()}.",
            f"Command: `{' '.join(sys.argv)}`: {args.duration:g} s per run after "
            f"{args.warmup:g} s warm-up, {args.connections} connections / {args.threads} wrk "
            f"threads for req/s, 1 connection / 1 thread for latency; upstream with "
            f"{args.upstream_workers} worker(s), {CONTENT_CHUNKS} content chunks per stream.",
            "## Summary",
            summary,
            "Added latency = the target's p50 (p99) at 1 connection minus the upstream's own.",
            "## Raw numbers (latencies in ms)",
            raw_table(results),
            "## Notes",
            notes(results) or "none",
            "## Config",
            f"```yaml\n{config}```",
        ]
    )
    path.write_text(text + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
