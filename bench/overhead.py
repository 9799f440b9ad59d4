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
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run by path: the bench package lives in the root

from bench import targets  # noqa: E402
from bench.processes import ServiceError, machine_busy_seconds  # noqa: E402
from bench.report import (  # noqa: E402
    BUSY_CORES,
    Measurement,
    Request,
    Scenario,
    TargetResult,
    cpu_table,
    notes,
    raw_table,
    summary_table,
)
from bench.targets import Target  # noqa: E402
from bench.upstream import CONTENT_CHUNKS  # noqa: E402
from bench.wrk import WrkError, ensure_wrk, run_wrk  # noqa: E402

BODIES: dict[Request, dict[str, object]] = {
    Request.CHAT: targets.CHAT_BODY, Request.STREAM: targets.STREAM_BODY
}


def _children_cpu_seconds() -> float:
    """CPU seconds of this process's reaped children: the wrk runs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def check_responses(chat_url: str, auth: dict[str, str]) -> tuple[list[str], list[str]]:
    """One request of each kind before any load. Returns (errors that void it, warnings)."""
    try:
        return _check_responses(chat_url, auth)
    except (httpx.HTTPError, ValueError, AttributeError, IndexError) as exc:
        return [f"{type(exc).__name__}: {exc}"], []


def _check_responses(chat_url: str, auth: dict[str, str]) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    warnings: list[str] = []
    with httpx.Client(timeout=30.0) as client:
        response = client.post(chat_url, json=BODIES[Request.CHAT], headers=auth)
        if response.status_code != 200:
            errors.append(f"non-stream answered HTTP {response.status_code}: {response.text[:300]}")
        else:
            body = response.json()
            if not (body.get("choices") or [{}])[0].get("message", {}).get("content"):
                errors.append(f"non-stream answer has no content: {response.text[:300]}")
            if not body.get("usage"):
                warnings.append("non-stream answer has no usage")

        with client.stream("POST", chat_url, json=BODIES[Request.STREAM], headers=auth) as stream:
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
                choices = event.get("choices") or []
                chunks += sum(1 for choice in choices if choice.get("delta", {}).get("content"))
    if not done:
        errors.append("stream did not end with data: [DONE]")
    if chunks != CONTENT_CHUNKS:
        warnings.append(f"stream relayed {chunks} content chunks of the {CONTENT_CHUNKS} sent")
    if not usage:
        warnings.append("stream has no usage chunk although include_usage was asked")
    return errors, warnings


def measure(target: Target, upstream: Target, args: argparse.Namespace, wrk: str) -> TargetResult:
    """Warm up, then the four wrk runs: each request kind at N connections and at 1."""
    result = TargetResult(name=target.name, version=target.version)
    errors, warnings = check_responses(target.chat_url, target.auth)
    result.notes += warnings
    if errors:
        result.skipped = "wrong answers: " + "; ".join(errors)
        result.broken = True
        return result

    def one_run(
        request: Request, connections: int, duration_s: float, delay_ms: float | None = None
    ) -> Measurement:
        target_cpu = target.service.cpu_seconds()
        upstream_cpu = upstream.service.cpu_seconds()
        machine_cpu = machine_busy_seconds()
        wrk_cpu = _children_cpu_seconds()
        run = run_wrk(
            target.chat_url,
            json.dumps(BODIES[request], separators=(",", ":")),
            connections=connections,
            threads=1 if connections == 1 else args.threads,
            duration_s=duration_s,
            headers=target.auth,
            timeout_s=args.timeout,
            wrk=wrk,
            delay_ms=delay_ms,
        )
        target_after = target.service.cpu_seconds()
        return Measurement(
            wrk=run,
            target_cpu_by_program={
                program: max(0.0, seconds - target_cpu.get(program, 0.0))
                for program, seconds in target_after.items()
            },
            target_is_upstream=target is upstream,
            upstream_cpu_s=sum(upstream.service.cpu_seconds().values())
            - sum(upstream_cpu.values()),
            wrk_cpu_s=_children_cpu_seconds() - wrk_cpu,
            machine_cpu_s=machine_busy_seconds() - machine_cpu,
        )

    if args.warmup > 0:
        for request in Request:
            try:
                one_run(request, args.connections, args.warmup)
            except WrkError as exc:
                result.skipped = f"wrk failed during the warm-up: {exc}"
                result.broken = True
                return result
    runs = [(Scenario(request, connections), None)
            for connections in (args.connections, 1) for request in Request]
    if args.paced_rps:
        # Each connection waits between requests: about paced_rps requests/s in all.
        runs.append((paced_scenario(args), 1e3 * args.paced_connections / args.paced_rps))
    for scenario, delay_ms in runs:
        request, connections = scenario.request, scenario.connections
        try:
            measurement = one_run(request, connections, args.duration, delay_ms)
        except WrkError as exc:
            result.notes.append(f"{scenario}: wrk failed: {exc}")
            continue
        result.runs[scenario] = measurement
        run = measurement.wrk
        problems = run.problems()
        _log(
            f"[{target.name}] {scenario}: {run.requests_per_s:,.0f} req/s, "
            f"p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
            f"{measurement.target_cpu_ms_per_request:.2f} CPU ms/req"
            + (f" FAILED: {problems}" if run.failed else f" ({problems})" if problems else "")
        )
        if problems:
            result.notes.append(f"{scenario}: {'FAILED, ' if run.failed else ''}{problems}")
        time.sleep(args.pause)
    return result


def paced_scenario(args: argparse.Namespace) -> Scenario:
    return Scenario(Request.CHAT, args.paced_connections, args.paced_rps)


def run_target(
    target: Target, upstream: Target, args: argparse.Namespace, wrk: str
) -> TargetResult:
    """Start the target (unless it is the upstream), measure it, stop it."""
    started_here = target is not upstream
    result = TargetResult(name=target.name, version=target.version)
    try:
        if started_here:
            _log(f"[{target.name}] starting: {' '.join(target.service.command)}")
            target.service.start()
        ready_s = target.wait_ready()
        _log(f"[{target.name}] ready after {ready_s:.1f} s")
        if target.name == targets.GATEWAY and not args.master_key_only:
            targets.use_virtual_key(target)
        _log(f"[{target.name}] load sent with: {target.features}")
        result = measure(target, upstream, args, wrk)
        result.notes.insert(0, f"load sent with the {target.features}")
        result.startup_s = ready_s
    except ServiceError as exc:
        _log(f"[{target.name}] {exc}")
        result.skipped = exc.reason
        result.broken = True
    finally:
        if started_here:
            leftovers = target.service.stop()
            if leftovers:
                note = "still running after SIGTERM, killed: " + ", ".join(leftovers)
                _log(f"[{target.name}] {note}")
                result.notes.append(note)
    return result


def run_gateway(
    args: argparse.Namespace, config: Path, work: Path, logs: Path, upstream: Target, wrk: str
) -> TargetResult:
    """``aigw up`` with every feature on: limits, budgets and the cache in a Redis of its
    own, the load sent with a virtual key (unless ``--master-key-only``)."""
    if args.master_key_only:
        return run_target(targets.gateway(args.aigw, config, work, logs), upstream, args, wrk)
    binary = targets.redis_binary()
    if binary is None:
        return TargetResult(name=targets.GATEWAY, broken=True,
                            skipped="redis-server is not installed (or pass --master-key-only)")
    service, url = targets.redis(binary, work, logs)
    service.start()
    try:
        gateway = targets.gateway(args.aigw, config, work, logs, redis_url=url)
        return run_target(gateway, upstream, args, wrk)
    finally:
        service.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32, help="connections for req/s")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads for the req/s runs")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    parser.add_argument("--timeout", type=float, default=10.0, help="wrk per-request timeout")
    parser.add_argument("--paced-rps", type=int, default=200,
                        help="a paced non-stream run at about this rate (0: none)")
    parser.add_argument("--paced-connections", type=int, default=10)
    parser.add_argument("--upstream-workers", type=int, default=1)
    parser.add_argument("--skip-gateway", action="store_true")
    parser.add_argument(
        "--master-key-only", action="store_true",
        help="drive the gateway with the master key, without Redis (no limits, no budget)")
    parser.add_argument("--aigw", default=targets.default_aigw(), help="the aigw command")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument(
        "--setup-litellm", action="store_true", help="create bench/.litellm-venv if absent"
    )
    parser.add_argument("--litellm-workers", type=int, default=1)
    parser.add_argument("--results-dir", type=Path, default=targets.BENCH_DIR / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = ensure_wrk()
    load_at_start = os.getloadavg()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    logs = args.results_dir / f"logs-{stamp}"
    litellm_skip = (
        "--skip-litellm" if args.skip_litellm else targets.litellm_missing(args.setup_litellm)
    )
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    upstream = targets.upstream(logs, args.upstream_workers)
    config = work / "config.yaml"
    config.write_text(targets.config_yaml(upstream.port))

    results: list[TargetResult] = []
    upstream.service.start()
    try:
        upstream.wait_ready()
        results.append(run_target(upstream, upstream, args, wrk))
        if args.skip_gateway:
            results.append(TargetResult(name=targets.GATEWAY, skipped="--skip-gateway"))
        else:
            results.append(run_gateway(args, config, work, logs, upstream, wrk))
        if litellm_skip:
            results.append(TargetResult(name=targets.LITELLM, skipped=litellm_skip))
        else:
            litellm = targets.litellm(config, args.litellm_workers, work, logs)
            results.append(run_target(litellm, upstream, args, wrk))
    finally:
        upstream.service.stop()
        shutil.rmtree(work, ignore_errors=True)

    summary = summary_table(results, args.connections,
                            paced_scenario(args) if args.paced_rps else None)
    sys.stdout.write(summary + "\n")
    failed = [t.name for t in results if t.failed]
    if failed:
        sys.stdout.write(f"\nFAILED: {', '.join(failed)} (see the table and the notes)\n")
    disturbed = sum(
        1 for t in results for m in t.runs.values() if m.cores(m.other_cpu_s) > BUSY_CORES
    )
    if disturbed:
        sys.stdout.write(
            f"\nwarning: other programs competed for the CPU during {disturbed} run(s); "
            "see the notes, and rerun on a quiet machine for numbers to quote\n"
        )
    report = write_report(
        args, stamp, results, summary, wrk, targets.config_yaml(upstream.port), load_at_start
    )
    sys.stdout.write(f"\nwritten to {report}, service logs in {logs}\n")
    return 1 if failed else 0


def write_report(
    args: argparse.Namespace,
    stamp: str,
    results: list[TargetResult],
    summary: str,
    wrk: str,
    config: str,
    load_at_start: tuple[float, float, float],
) -> Path:
    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"overhead-{stamp}.md"
    load = " ".join(f"{value:.2f}" for value in load_at_start)
    machine = (
        f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
        f"{targets.wrk_version(wrk)}"
    )
    text = "\n\n".join(
        [
            f"# Overhead benchmark {stamp}",
            f"Machine: {machine}; load average {load} at start. "
            f"Gateway revision {targets.git_revision()}.",
            f"Command: `{' '.join(sys.argv)}`: {args.duration:g} s per run after "
            f"{args.warmup:g} s warm-up, {args.connections} connections / {args.threads} wrk "
            f"threads for req/s, 1 connection / 1 thread for latency; upstream with "
            f"{args.upstream_workers} worker(s), {CONTENT_CHUNKS} content chunks per stream.",
            "## Summary",
            summary,
            "Added latency = the target's p50 (p99) at 1 connection minus the upstream's own.",
            "## Raw numbers (latencies in ms)",
            raw_table(results),
            "## Target CPU by process",
            cpu_table(results),
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
