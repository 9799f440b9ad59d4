"""What an overhead run measured, and its markdown rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from targets import GATEWAY, LITELLM, UPSTREAM
from wrk import WrkResult


class Request(Enum):
    CHAT = "non-stream"
    STREAM = "stream"


@dataclass(frozen=True)
class Scenario:
    request: Request
    connections: int

    def __str__(self) -> str:
        return f"{self.request.value} @{self.connections}"


@dataclass(frozen=True)
class Measurement:
    """One wrk run, with the CPU the target and the fake upstream spent during it."""

    wrk: WrkResult
    target_cpu_s: float
    upstream_cpu_s: float

    @property
    def target_cpu_ms_per_request(self) -> float:
        return 1e3 * self.target_cpu_s / self.wrk.requests if self.wrk.requests else 0.0

    @property
    def upstream_cpu_share(self) -> float:
        """Cores the upstream kept busy: 0.25 means a quarter of one core."""
        return self.upstream_cpu_s / self.wrk.duration_s if self.wrk.duration_s else 0.0


@dataclass
class TargetResult:
    name: str
    version: str = ""
    startup_s: float | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    runs: dict[Scenario, Measurement] = field(default_factory=dict)

    def ok(self, scenario: Scenario) -> WrkResult | None:
        measurement = self.runs.get(scenario)
        if measurement is None or measurement.wrk.failed:
            return None
        return measurement.wrk


def _rps_cell(target: TargetResult, scenario: Scenario) -> str:
    measurement = target.runs.get(scenario)
    if measurement is None:
        return "—"
    if measurement.wrk.failed:
        return f"FAILED ({measurement.wrk.problems()})"
    return f"{measurement.wrk.requests_per_s:,.0f}"


def _added_cell(target: TargetResult, base: TargetResult | None, scenario: Scenario) -> str:
    measurement = target.runs.get(scenario)
    if measurement is None:
        return "—"
    run = measurement.wrk
    if run.failed:
        return f"FAILED ({run.problems()})"
    base_run = base.ok(scenario) if base is not None else None
    if target is base or base_run is None:
        return f"base {run.p50_ms:.2f} / {run.p99_ms:.2f}"
    return f"{run.p50_ms - base_run.p50_ms:+.2f} / {run.p99_ms - base_run.p99_ms:+.2f}"


def _ratio(ours: TargetResult, theirs: TargetResult, scenario: Scenario) -> str:
    a, b = ours.ok(scenario), theirs.ok(scenario)
    if a is None or b is None or b.requests_per_s == 0:
        return "n/a"
    return f"{a.requests_per_s / b.requests_per_s:.1f}x"


def summary_table(targets: list[TargetResult], connections: int) -> str:
    base = next((t for t in targets if t.name == UPSTREAM and not t.skipped), None)
    chat_n, stream_n = Scenario(Request.CHAT, connections), Scenario(Request.STREAM, connections)
    chat_1, stream_1 = Scenario(Request.CHAT, 1), Scenario(Request.STREAM, 1)
    lines = [
        f"| path | non-stream req/s @{connections} | stream req/s @{connections} "
        "| added p50 / p99 @1 (ms) non-stream | added p50 / p99 @1 (ms) stream |",
        "|---|---:|---:|---:|---:|",
    ]
    for target in targets:
        label = f"{target.name} {target.version}".strip()
        if target.skipped:
            lines.append(f"| {label} | skipped: {target.skipped} | | | |")
            continue
        cells = [
            _rps_cell(target, chat_n),
            _rps_cell(target, stream_n),
            _added_cell(target, base, chat_1),
            _added_cell(target, base, stream_1),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ours = next((t for t in targets if t.name == GATEWAY and not t.skipped), None)
    theirs = next((t for t in targets if t.name == LITELLM and not t.skipped), None)
    if ours is not None and theirs is not None:
        lines += [
            "",
            f"{GATEWAY} / {LITELLM} req/s: non-stream {_ratio(ours, theirs, chat_n)}, "
            f"stream {_ratio(ours, theirs, stream_n)}",
        ]
    return "\n".join(lines)


def raw_table(targets: list[TargetResult]) -> str:
    lines = [
        "| path | request | conns | requests | req/s | mean | p50 | p90 | p99 | p99.9 | max "
        "| errors | target CPU ms/req | upstream CPU (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for target in targets:
        for scenario, m in target.runs.items():
            run = m.wrk
            lines.append(
                f"| {target.name} | {scenario.request.value} | {run.connections} "
                f"| {run.requests} | {run.requests_per_s:,.1f} | {run.mean_ms:.3f} "
                f"| {run.p50_ms:.3f} | {run.p90_ms:.3f} | {run.p99_ms:.3f} | {run.p999_ms:.3f} "
                f"| {run.max_ms:.3f} | {run.problems() or 'none'} "
                f"| {m.target_cpu_ms_per_request:.3f} | {m.upstream_cpu_share:.2f} |"
            )
    return "\n".join(lines)


def notes(targets: list[TargetResult]) -> str:
    lines: list[str] = []
    for target in targets:
        if target.startup_s is not None:
            lines.append(f"- {target.name}: ready after {target.startup_s:.1f} s")
        lines += [f"- {target.name}: {note}" for note in target.notes]
    return "\n".join(lines)
