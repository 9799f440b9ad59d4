"""One measurement of CPU per call: ``aigw up`` under load, each process's CPU read around it.

How and why it is measured so is the docstring of bench/cpu_cost.py.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from bench import targets
from bench.calibration import calibration_seconds
from bench.keepalive_client import Post, run_calls
from bench.processes import thread_cpu_seconds, tree_cpu_seconds
from bench.targets import HOST, Target
from bench.upstream import CONTENT_CHUNKS

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
BODIES = {NON_STREAM: targets.CHAT_BODY, STREAM: targets.STREAM_BODY}
# Every limit a call is checked against: rpm and tpm counted in Redis, a monthly budget
# reserved and settled; far above the load. Not bench/targets.py's KEY_LIMITS: its
# parallel cap is more work per call than the baseline was recorded with.
KEY_LIMITS = {"rpm": 1_000_000, "tpm": 1_000_000_000, "monthly_budget_usd": "1000"}


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


# ---- the gateway under test -------------------------------------------------------------


@dataclass
class UnderTest:
    """``aigw up`` serving one model, sent calls with a virtual key, and its upstream."""

    gateway: Target
    upstream: Target

    def programs_cpu_seconds(self) -> dict[str, float]:
        seconds = tree_cpu_seconds(self.gateway.service.pid)
        seconds[UPSTREAM] = thread_cpu_seconds(self.upstream.service.pid)
        return seconds


@contextmanager
def running_gateway(work: Path, redis_server: str) -> Iterator[UnderTest]:
    """The fake upstream, Redis and ``aigw up`` of bench/targets.py, stopped on exit."""
    logs = work / "logs"
    upstream = targets.upstream(logs, workers=1)
    config = work / "config.yaml"
    config.write_text(targets.config_yaml(upstream.port))
    redis, redis_url = targets.redis(redis_server, work, logs)
    gateway = targets.gateway(targets.default_aigw(), config, work, logs, redis_url)
    try:
        redis.start()
        upstream.service.start()
        upstream.wait_ready()
        gateway.service.start()
        gateway.wait_ready()
        targets.use_virtual_key(gateway, KEY_LIMITS)
        yield UnderTest(gateway, upstream)
    finally:
        gateway.service.stop()
        redis.stop()
        upstream.service.stop()


# ---- one measurement ---------------------------------------------------------------------


def _stream_complete(body: bytes) -> bool:
    return body.count(b"data: ") >= CONTENT_CHUNKS + 3 and body.rstrip().endswith(b"[DONE]")


def _answer_complete(body: bytes) -> bool:
    return b'"usage"' in body and b'"content"' in body


def _posts(gateway: Target) -> dict[str, Post]:
    headers = {"authorization": f"Bearer {gateway.api_key}"}
    path = "/v1/chat/completions"
    return {
        NON_STREAM: Post.json(HOST, gateway.port, path, BODIES[NON_STREAM], headers,
                              _answer_complete),
        STREAM: Post.json(HOST, gateway.port, path, BODIES[STREAM], headers, _stream_complete),
    }


def _drive(gateway: Target, post: Post, calls: int, concurrency: int) -> None:
    uvloop.run(run_calls(HOST, gateway.port, post, calls, concurrency))


def measure_round(under_test: UnderTest, plan: Plan) -> dict[str, dict[str, float]]:
    """CPU ms per call by process and kind: each kind's calls, the CPU read around them."""
    posts = _posts(under_test.gateway)
    cost: dict[str, dict[str, float]] = {role: {} for role in REPORTED}
    for kind in KINDS:
        before = under_test.programs_cpu_seconds()
        _drive(under_test.gateway, posts[kind], plan.calls(kind), plan.concurrency)
        after = under_test.programs_cpu_seconds()
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
            running_gateway(Path(tmp), redis_server) as under_test:
        result.priority = priority
        posts = _posts(under_test.gateway)
        for kind in KINDS:
            _drive(under_test.gateway, posts[kind], plan.warmup_calls, plan.concurrency)
        for _ in range(plan.rounds):
            result.calibration_s += [calibration_seconds() for _ in range(plan.calibration_samples)]
            result.rounds.append(measure_round(under_test, plan))
        result.calibration_s += [calibration_seconds() for _ in range(plan.calibration_samples)]
    result.seconds = time.monotonic() - started
    return result
