"""The committed baseline of CPU per call (tests/perf/cpu_baseline.json): written from
measurements, read back, a measurement checked against it and shown beside it."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import targets
from bench.cpu_measurement import KINDS, REPORTED, ROLES, Measurement
from bench.upstream import CONTENT_CHUNKS

BASELINE = targets.REPO_DIR / "tests" / "perf" / "cpu_baseline.json"
# A failure when a cost grows past baseline x THRESHOLD (issue 15).
THRESHOLD = 1.30
# The code whose changes make a recorded baseline's commit "+changes".
PRODUCT = ("ingress", "workers", "core", "schemas", "cli")

Ratios = dict[str, dict[str, float]]


def baseline_document(measurements: list[Measurement]) -> dict[str, Any]:
    """The baseline: each ratio the median of the measurements', and the raw numbers."""
    first = measurements[0]
    plan = first.plan

    def median(value: Callable[[Measurement, str, str], float], digits: int,
               roles: tuple[str, ...] = ROLES) -> Ratios:
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
        "commit": targets.git_revision(*PRODUCT, short=False),
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


def load_baseline(path: Path = BASELINE) -> Ratios:
    ratios: Ratios = json.loads(path.read_text())["ratios"]
    return ratios


def regressions(measurement: Measurement, baseline: Ratios) -> list[str]:
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


def report(measurement: Measurement, baseline: Ratios | None) -> str:
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
