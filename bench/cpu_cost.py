"""CPU cost of one call in the ingress and in the worker, against a committed baseline.

    .venv/bin/python -m bench.cpu_cost            # current ratios against the baseline
    .venv/bin/python -m bench.cpu_cost --record   # measure and rewrite the baseline

Starts the fake upstream (bench/upstream.py), a redis-server on a free port and
``aigw up`` with ``REDIS_URL`` set (nats-server, an openai worker and accounting run as
its children), creates a virtual key with rpm, tpm and a monthly budget through the
admin API, and sends calls with that key: non-streamed, and streamed with 20 content
chunks and a usage chunk. Each process's CPU time (utime + stime from /proc, its
children not included) is read before and after each kind of call in a round, giving CPU
ms per call for the ingress (the ``aigw up`` process) and the worker.

A cost is compared as a ratio, to cancel what is not the gateway's doing:

- the machine's speed (up to 3x from day to day) and, more, other programs on the same
  2 cores: an event loop preempted between calls comes back to cold caches, and its CPU
  per call rose by up to 70 % under other people's benchmarks while a CPU-bound workload
  timed alone moved by 5 %. So each round divides by the fake upstream's CPU per call in
  that same round (the same calls, at the same moment, under the same disturbance; a
  single-threaded Python event loop, read to the nanosecond from /proc/<pid>/schedstat),
  and the median of the rounds counts;
- a fixed pure-Python calibration workload (JSON, dicts, strings and a socket pair over
  a chat body), timed in CPU time in a fresh interpreter between the rounds, min of the
  samples, is stored and shown beside it as ``cost / calibration``, not checked: it
  tracks the machine's speed but not the disturbance (numbers in tests/perf).

The measurement runs at nice -10 when it may, so that other people's load preempts it less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvloop

from bench.keepalive_client import Post, run_calls
from bench.processes import Service, free_port, tree_cpu_seconds
from bench.upstream import CONTENT_CHUNKS
from tests.redis_server import RedisServer

REPO_DIR = Path(__file__).resolve().parent.parent
BASELINE = REPO_DIR / "tests" / "perf" / "cpu_baseline.json"
HOST = "127.0.0.1"
MASTER_KEY = "sk-master"
MODEL = "bench"
# A failure when a cost grows past baseline x THRESHOLD (issue 15).
THRESHOLD = 1.30

INGRESS = "ingress"
WORKER = "worker"
ROLES = (INGRESS, WORKER)
NON_STREAM = "non_stream"
STREAM = "stream"
KINDS = (NON_STREAM, STREAM)
NATS = "nats-server"
UPSTREAM = "upstream"
REPORTED = (*ROLES, NATS, UPSTREAM)  # the last two are shown, not checked
# Program labels from bench/processes.py for the processes of ``aigw up``.
PROGRAMS = {INGRESS: "aigw up", WORKER: "cli worker", NATS: "nats-server", UPSTREAM: UPSTREAM}
# The nice value a measurement runs at when it may (see raised_priority).
PRIORITY = -10

_MESSAGES = [{"role": "user", "content": "Say hello in twenty words."}]
BODIES: dict[str, dict[str, object]] = {
    NON_STREAM: {"model": MODEL, "messages": _MESSAGES, "max_tokens": 64},
    STREAM: {
        "model": MODEL, "messages": _MESSAGES, "max_tokens": 64, "stream": True,
        "stream_options": {"include_usage": True},
    },
}


@dataclass(frozen=True)
class Plan:
    """How much load one measurement applies."""

    non_stream_calls: int = 500
    stream_calls: int = 200
    concurrency: int = 12
    rounds: int = 6
    warmup_calls: int = 300
    calibration_samples: int = 2  # before each round, and once more at the end

    def calls(self, kind: str) -> int:
        return self.non_stream_calls if kind == NON_STREAM else self.stream_calls


# ---- calibration -----------------------------------------------------------------------

# Work of the same sort as a gateway's per call, in pure Python and the kernel's loopback:
# encode and decode a chat body and a stream chunk, copy and rename dict keys, format
# strings, and small writes and reads on a socket pair. Prints its CPU seconds.
_CALIBRATION = r"""
import json, socket, time
body = {"model": "bench", "max_tokens": 64, "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Say hello in twenty words. " * 4},
                     {"role": "assistant", "content": "Hello there, how are you today?"},
                     {"role": "user", "content": "Once more, with feeling."}]}
chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000,
         "model": "bench", "choices": [{"index": 0, "delta": {"content": " w7"},
         "finish_reason": None}], "usage": None}
left, right = socket.socketpair()
start = time.process_time()
total = 0
for i in range(3000):
    text = json.dumps(body)
    request = json.loads(text)
    request["user"] = f"key-{i % 17}"
    headers = {k.lower(): str(v) for k, v in request.items() if not isinstance(v, list)}
    for n in range(4):
        chunk["choices"][0]["delta"]["content"] = f" w{n}"
        line = "data: " + json.dumps(chunk, separators=(",", ":")) + "\n\n"
        event = json.loads(line[6:])
        total += len(event["choices"][0]["delta"]["content"]) + len(headers)
    left.send(line.encode())
    total += len(right.recv(4096))
print(time.process_time() - start, total)
"""


def calibration_seconds() -> float:
    """CPU seconds of the calibration workload, timed in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _CALIBRATION], capture_output=True, text=True, check=True
    )
    return float(done.stdout.split()[0])


# ---- the gateway under test -------------------------------------------------------------


def gateway_config(upstream_port: int) -> str:
    """One OpenAI-compatible deployment on the fake upstream, priced so budgets apply."""
    return (
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f'      api_base: "http://{HOST}:{upstream_port}/v1"\n'
        "      api_key: sk-bench\n"
        "      input_cost_per_token: 0.000001\n"
        "      output_cost_per_token: 0.000002\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )


@dataclass
class Gateway:
    """``aigw up`` serving one model, and the virtual key the calls use."""

    service: Service
    port: int
    upstream: Service
    key: str = ""

    def programs_cpu_seconds(self) -> dict[str, float]:
        seconds = tree_cpu_seconds(self.service.pid)
        seconds[UPSTREAM] = thread_cpu_seconds(self.upstream.pid)
        return seconds


def _create_key(port: int) -> str:
    """A key with every limit on: rpm and tpm in Redis, a budget reserved and settled."""
    body = {
        "alias": "cpu-cost",
        "allowed_models": [MODEL],
        "limits": {"rpm": 1_000_000, "tpm": 1_000_000_000, "monthly_budget_usd": "1000"},
    }
    answer = httpx.post(
        f"http://{HOST}:{port}/admin/keys", json=body,
        headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30,
    )
    answer.raise_for_status()
    secret: str = answer.json()["secret"]
    return secret


def thread_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process's main thread, to the nanosecond (/proc ticks are 10 ms):
    for the single-threaded fake upstream, whose cost per call is a tenth of a ms."""
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1e9


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


@contextmanager
def running_gateway(work: Path, redis_server: str) -> Iterator[Gateway]:
    """The fake upstream, Redis and ``aigw up``, stopped on exit."""
    logs = work / "logs"
    upstream_port = free_port()
    upstream = Service(
        "upstream",
        [sys.executable, str(REPO_DIR / "bench" / "upstream.py"), "--host", HOST,
         "--port", str(upstream_port)],
        logs / "upstream.log",
    )
    redis = RedisServer(redis_server, work)
    config = work / "config.yaml"
    config.write_text(gateway_config(upstream_port))
    port = free_port()
    aigw = REPO_DIR / ".venv" / "bin" / "aigw"
    gateway = Gateway(
        Service(
            "ai-gateway",
            [str(aigw) if aigw.exists() else "aigw", "up", "--config", str(config),
             "--host", HOST, "--port", str(port), "--data-dir", str(work / "aigw-data")],
            logs / "ai-gateway.log",
            cwd=work,
        ),
        port,
        upstream,
    )
    upstream.start()
    try:
        redis.start()
        gateway.service.env["REDIS_URL"] = redis.url
        upstream.wait_ready(f"http://{HOST}:{upstream_port}/health", 15)
        gateway.service.start()
        gateway.service.wait_ready(f"http://{HOST}:{port}/health/readiness", 60)
        gateway.key = _create_key(port)
        yield gateway
    finally:
        gateway.service.stop()
        redis.stop()
        upstream.stop()


# ---- one measurement ---------------------------------------------------------------------


def _stream_complete(body: bytes) -> bool:
    return body.count(b"data: ") >= CONTENT_CHUNKS + 3 and body.rstrip().endswith(b"[DONE]")


def _answer_complete(body: bytes) -> bool:
    return b'"usage"' in body and b'"content"' in body


def _posts(gateway: Gateway) -> dict[str, Post]:
    headers = {"authorization": f"Bearer {gateway.key}"}
    path = "/v1/chat/completions"
    return {
        NON_STREAM: Post.json(HOST, gateway.port, path, BODIES[NON_STREAM], headers,
                              _answer_complete),
        STREAM: Post.json(HOST, gateway.port, path, BODIES[STREAM], headers, _stream_complete),
    }


def _drive(gateway: Gateway, post: Post, calls: int, concurrency: int) -> None:
    uvloop.run(run_calls(HOST, gateway.port, post, calls, concurrency))


def measure_round(gateway: Gateway, plan: Plan) -> dict[str, dict[str, float]]:
    """CPU ms per call by process and kind: each kind's calls, the CPU read around them."""
    posts = _posts(gateway)
    cost: dict[str, dict[str, float]] = {role: {} for role in REPORTED}
    for kind in KINDS:
        before = gateway.programs_cpu_seconds()
        _drive(gateway, posts[kind], plan.calls(kind), plan.concurrency)
        after = gateway.programs_cpu_seconds()
        missing = [PROGRAMS[role] for role in REPORTED if PROGRAMS[role] not in after]
        if missing:  # a renamed process must not pass for one that costs nothing
            raise RuntimeError(f"no process {missing} under aigw up; found {sorted(after)}")
        for role in REPORTED:
            spent = after.get(PROGRAMS[role], 0.0) - before.get(PROGRAMS[role], 0.0)
            cost[role][kind] = 1000 * spent / plan.calls(kind)
    return cost


@dataclass
class Measurement:
    """Every round's costs and every calibration sample of one run."""

    plan: Plan
    rounds: list[dict[str, dict[str, float]]] = field(default_factory=list)
    calibration_s: list[float] = field(default_factory=list)
    seconds: float = 0.0
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    priority: int = 0

    @property
    def calibration_ms(self) -> float:
        """The least disturbed calibration sample."""
        return 1000 * min(self.calibration_s)

    def cost_ms(self, role: str, kind: str) -> float:
        """CPU ms per call, the median of the rounds."""
        return statistics.median(r[role][kind] for r in self.rounds)

    def ratio(self, role: str, kind: str) -> float:
        """What the check compares: CPU per call over the fake upstream's CPU per call in
        the same round (the same calls, the same moment, the same disturbance), the median
        of the rounds."""
        return statistics.median(r[role][kind] / r[UPSTREAM][kind] for r in self.rounds)

    def calibration_ratio(self, role: str, kind: str) -> float:
        """The least disturbed round's CPU per call over the calibration workload's CPU."""
        return min(r[role][kind] for r in self.rounds) / self.calibration_ms

    def ratios(self) -> dict[str, dict[str, float]]:
        return {role: {kind: round(self.ratio(role, kind), 4) for kind in KINDS}
                for role in ROLES}


@contextmanager
def raised_priority() -> Iterator[int]:
    """Run at nice PRIORITY when allowed (root or CAP_SYS_NICE), else as we are; yields the
    nice value in force. Everything started meanwhile inherits it: under other people's
    load the measured processes are then preempted less, and a preemption is what makes
    an event loop's next few calls dearer (cold caches)."""
    own = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)
    except OSError:
        yield own
        return
    try:
        yield PRIORITY
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, own)


def measure(plan: Plan, redis_server: str) -> Measurement:
    """Start everything, warm up, then the rounds, calibrating before each and after."""
    started = time.monotonic()
    result = Measurement(plan, load_average=os.getloadavg())
    with raised_priority() as priority, tempfile.TemporaryDirectory(prefix="cpu-cost-") as tmp, \
            running_gateway(Path(tmp), redis_server) as gateway:
        result.priority = priority
        posts = _posts(gateway)
        for kind in KINDS:
            _drive(gateway, posts[kind], plan.warmup_calls, plan.concurrency)
        for _ in range(plan.rounds):
            result.calibration_s += [calibration_seconds() for _ in range(plan.calibration_samples)]
            result.rounds.append(measure_round(gateway, plan))
        result.calibration_s += [calibration_seconds() for _ in range(plan.calibration_samples)]
    result.seconds = time.monotonic() - started
    return result


# ---- baseline ----------------------------------------------------------------------------


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO_DIR), *args], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip()


def baseline_document(measurements: list[Measurement]) -> dict[str, Any]:
    """The baseline: each ratio the median of the measurements', and the raw numbers."""
    changed = bool(_git("status", "--porcelain", "-uno", "--", "ingress", "workers", "core",
                        "schemas", "cli"))
    first = measurements[0]
    plan = first.plan

    def median(value: Callable[[Measurement, str, str], float], digits: int,
               roles: tuple[str, ...] = ROLES) -> dict[str, dict[str, float]]:
        return {role: {kind: round(statistics.median(value(m, role, kind) for m in measurements),
                                   digits) for kind in KINDS} for role in roles}

    return {
        "about": "ratios: CPU per call of the ingress and the worker over the fake upstream's "
                 "in the same round, median of the rounds (and of the runs); checked against "
                 "x threshold. Rewrite with: .venv/bin/python -m bench.cpu_cost --record",
        "ratios": median(Measurement.ratio, 4),
        "threshold": THRESHOLD,
        "calibration_ratios": median(Measurement.calibration_ratio, 5),
        "cpu_ms_per_call": median(Measurement.cost_ms, 4, REPORTED),
        "calibration_ms": round(statistics.median(m.calibration_ms for m in measurements), 2),
        "commit": _git("rev-parse", "HEAD") + ("+changes" if changed else ""),
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, "
                   f"Python {platform.python_version()}",
        "load_average": [round(v, 2) for v in first.load_average],
        "nice": first.priority,
        "plan": {"non_stream_calls": plan.non_stream_calls, "stream_calls": plan.stream_calls,
                 "stream_content_chunks": CONTENT_CHUNKS, "concurrency": plan.concurrency,
                 "rounds": plan.rounds, "runs": len(measurements)},
        "runs": [
            {
                "ratios": m.ratios(),
                "rounds_cpu_ms_per_call": [
                    {role: {kind: round(ms, 4) for kind, ms in kinds.items()}
                     for role, kinds in one.items()}
                    for one in m.rounds
                ],
                "calibration_samples_ms": [round(1000 * s, 2) for s in m.calibration_s],
                "seconds": round(m.seconds, 1),
            }
            for m in measurements
        ],
    }


def load_baseline(path: Path = BASELINE) -> dict[str, dict[str, float]]:
    ratios: dict[str, dict[str, float]] = json.loads(path.read_text())["ratios"]
    return ratios


def regressions(
    measurement: Measurement, baseline: dict[str, dict[str, float]]
) -> list[str]:
    """Each (role, kind) whose ratio grew past baseline x THRESHOLD, said in a line."""
    found = []
    for role in ROLES:
        for kind in KINDS:
            now, then = measurement.ratio(role, kind), baseline[role][kind]
            if now > then * THRESHOLD:
                found.append(
                    f"{role} {kind}: {measurement.cost_ms(role, kind):.3f} CPU ms per call, "
                    f"{now / then:.2f}x the baseline (limit {THRESHOLD:.2f}x)"
                )
    return found


def report(measurement: Measurement, baseline: dict[str, dict[str, float]] | None) -> str:
    """A table: CPU ms per call by round, the ratios, and the ratio against the baseline."""
    plan = measurement.plan
    lines = [
        f"{plan.rounds} rounds of {plan.non_stream_calls} non-stream + {plan.stream_calls} "
        f"stream calls at {plan.concurrency} concurrent; calibration "
        f"{measurement.calibration_ms:.1f} ms (min of {len(measurement.calibration_s)}, "
        f"max {1000 * max(measurement.calibration_s):.1f}); load average "
        + " ".join(f"{v:.2f}" for v in measurement.load_average)
        + f"; nice {measurement.priority}; {measurement.seconds:.0f} s",
        "",
        "| process | call | CPU ms/call: median (rounds) | / upstream | / calibration "
        "| vs baseline |",
        "|---|---|---|---:|---:|---:|",
    ]
    for role in REPORTED:
        for kind in KINDS:
            rounds = " ".join(f"{r[role][kind]:.3f}" for r in measurement.rounds)
            cells = ["", "", ""]
            if role in ROLES:
                ratio = measurement.ratio(role, kind)
                cells[0] = f"{ratio:.3f}"
                cells[1] = f"{measurement.calibration_ratio(role, kind):.5f}"
                if baseline is not None:
                    cells[2] = f"{ratio / baseline[role][kind]:.2f}x"
            lines.append(
                f"| {role} | {kind} | {measurement.cost_ms(role, kind):.3f} ({rounds}) | "
                + " | ".join(cells) + " |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--record", action="store_true",
                        help="rewrite the baseline with the median of --runs measurements")
    parser.add_argument("--runs", type=int, default=None,
                        help="measurements to take (default 3 with --record, else 1)")
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    parser.add_argument("--rounds", type=int, default=Plan.rounds)
    parser.add_argument("--non-stream-calls", type=int, default=Plan.non_stream_calls)
    parser.add_argument("--stream-calls", type=int, default=Plan.stream_calls)
    parser.add_argument("--concurrency", type=int, default=Plan.concurrency)
    parser.add_argument("--calibration-samples", type=int, default=Plan.calibration_samples)
    parser.add_argument("--json", type=Path, help="also write the measurement here")
    args = parser.parse_args(argv)
    redis_server = redis_binary()
    if redis_server is None:
        sys.stderr.write("redis-server is not installed\n")
        return 2
    plan = Plan(
        non_stream_calls=args.non_stream_calls, stream_calls=args.stream_calls,
        concurrency=args.concurrency, rounds=args.rounds,
        calibration_samples=args.calibration_samples,
    )
    baseline = None
    if not args.record and args.baseline.exists():
        baseline = load_baseline(args.baseline)
    runs = args.runs or (3 if args.record else 1)
    measurements = []
    for _ in range(runs):
        measurements.append(measure(plan, redis_server))
        print(report(measurements[-1], baseline) + "\n", flush=True)
    document = baseline_document(measurements)
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    if args.record:
        args.baseline.write_text(json.dumps(document, indent=2) + "\n")
        print(f"baseline written to {args.baseline}: {json.dumps(document['ratios'])}")
        return 0
    if baseline is None:
        print(f"no baseline at {args.baseline}: run with --record")
        return 0
    found = [line for m in measurements for line in regressions(m, baseline)]
    print("\n".join(["REGRESSION:", *found]) if found else "within the baseline")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
