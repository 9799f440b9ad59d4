"""What an overhead run measured, and its markdown rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from bench.targets import GATEWAY, LITELLM, UPSTREAM
from bench.wrk import WrkResult

# More foreign CPU than this during a run (in cores) and its numbers get a warning.
BUSY_CORES = 0.25


class Request(Enum):
    CHAT = "non-stream"
    STREAM = "stream"


@dataclass(frozen=True)
class Scenario:
    request: Request
    connections: int
    # Paced: each connection waits between requests, for about this many requests/s.
    paced_rps: int | None = None

    @property
    def kind(self) -> str:
        paced = f" paced ~{self.paced_rps} rps" if self.paced_rps is not None else ""
        return self.request.value + paced

    def __str__(self) -> str:
        if self.paced_rps is not None:
            return f"{self.request.value} paced ~{self.paced_rps} rps @{self.connections}"
        return f"{self.request.value} @{self.connections}"


@dataclass(frozen=True)
class Measurement:
    """One wrk run, with the CPU the target and the fake upstream spent during it."""

    wrk: WrkResult
    target_cpu_by_program: dict[str, float]
    upstream_cpu_s: float
    wrk_cpu_s: float
    machine_cpu_s: float
    target_is_upstream: bool = False

    @property
    def target_cpu_s(self) -> float:
        return sum(self.target_cpu_by_program.values())

    @property
    def target_cpu_ms_per_request(self) -> float:
        return 1e3 * self.target_cpu_s / self.wrk.requests if self.wrk.requests else 0.0

    def cores(self, cpu_s: float) -> float:
        """CPU seconds as cores kept busy over the run: 0.25 is a quarter of one core."""
        return cpu_s / self.wrk.duration_s if self.wrk.duration_s else 0.0

    @property
    def other_cpu_s(self) -> float:
        """CPU spent by anything but the target, the upstream and wrk: noise on the numbers."""
        ours = self.target_cpu_s + self.wrk_cpu_s
        if not self.target_is_upstream:
            ours += self.upstream_cpu_s
        return max(0.0, self.machine_cpu_s - ours)


@dataclass
class TargetResult:
    name: str
    version: str = ""
    startup_s: float | None = None
    skipped: str | None = None
    broken: bool = False  # skipped because it failed to start or answered wrongly
    notes: list[str] = field(default_factory=list)
    runs: dict[Scenario, Measurement] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Did not start, answered wrongly, or any run failed or did not happen."""
        if self.skipped:
            return self.broken
        runs = list(self.runs.values())
        # Every request kind at N connections and at 1.
        return len(runs) < 2 * len(Request) or any(m.wrk.failed for m in runs)

    def ok(self, scenario: Scenario) -> WrkResult | None:
        measurement = self.runs.get(scenario)
        if measurement is None or measurement.wrk.failed:
            return None
        return measurement.wrk


_NO_RUN = "FAILED (wrk did not run, see notes)"


def _rps_cell(target: TargetResult, scenario: Scenario) -> str:
    measurement = target.runs.get(scenario)
    if measurement is None:
        return _NO_RUN
    if measurement.wrk.failed:
        return f"FAILED ({measurement.wrk.problems()})"
    return f"{measurement.wrk.requests_per_s:,.0f}"


def _added_cell(target: TargetResult, base: TargetResult | None, scenario: Scenario) -> str:
    measurement = target.runs.get(scenario)
    if measurement is None:
        return _NO_RUN
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


def summary_table(
    targets: list[TargetResult], connections: int, paced: Scenario | None = None
) -> str:
    base = next((t for t in targets if t.name == UPSTREAM and not t.skipped), None)
    chat_n, stream_n = Scenario(Request.CHAT, connections), Scenario(Request.STREAM, connections)
    chat_1, stream_1 = Scenario(Request.CHAT, 1), Scenario(Request.STREAM, 1)
    header = (f"| path | non-stream req/s @{connections} | stream req/s @{connections} "
              "| added p50 / p99 @1 (ms) non-stream | added p50 / p99 @1 (ms) stream |")
    rule = "|---|---:|---:|---:|---:|"
    if paced is not None:
        header += f" added p50 / p99 (ms) {paced} |"
        rule += "---:|"
    lines = [header, rule]
    for target in targets:
        label = f"{target.name} {target.version}".strip()
        if target.skipped:
            verdict = "FAILED" if target.broken else "skipped"
            reason = " ".join(target.skipped.split()).replace("|", "/")[:300]
            lines.append(f"| {label} | {verdict}: {reason} | | | |" + (" |" if paced else ""))
            continue
        cells = [
            _rps_cell(target, chat_n),
            _rps_cell(target, stream_n),
            _added_cell(target, base, chat_1),
            _added_cell(target, base, stream_1),
        ]
        if paced is not None:
            cells.append(_added_cell(target, base, paced))
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
        "| errors | target CPU ms/req | cores: target | upstream | wrk | other |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        for scenario, m in target.runs.items():
            run = m.wrk
            lines.append(
                f"| {target.name} | {scenario.kind} | {run.connections} "
                f"| {run.requests} | {run.requests_per_s:,.1f} | {run.mean_ms:.3f} "
                f"| {run.p50_ms:.3f} | {run.p90_ms:.3f} | {run.p99_ms:.3f} | {run.p999_ms:.3f} "
                f"| {run.max_ms:.3f} | {run.problems() or 'none'} "
                f"| {m.target_cpu_ms_per_request:.3f} | {m.cores(m.target_cpu_s):.2f} "
                f"| {m.cores(m.upstream_cpu_s):.2f} | {m.cores(m.wrk_cpu_s):.2f} "
                f"| {m.cores(m.other_cpu_s):.2f} |"
            )
    return "\n".join(lines)


def cpu_table(targets: list[TargetResult]) -> str:
    """Where each target's CPU went, per process, in CPU milliseconds per request."""
    lines = ["| path | request | conns | CPU ms per request, by process |", "|---|---|---:|---|"]
    for target in targets:
        for scenario, m in target.runs.items():
            if not m.wrk.requests:
                continue
            parts = [
                f"{program} {1e3 * seconds / m.wrk.requests:.2f}"
                for program, seconds in sorted(
                    m.target_cpu_by_program.items(), key=lambda item: -item[1]
                )
            ]
            lines.append(
                f"| {target.name} | {scenario.kind} | {scenario.connections} "
                f"| {', '.join(parts)} |"
            )
    return "\n".join(lines)


def notes(targets: list[TargetResult], busy_cores: float = BUSY_CORES) -> str:
    lines: list[str] = []
    for target in targets:
        if target.startup_s is not None:
            lines.append(f"- {target.name}: ready after {target.startup_s:.1f} s")
        lines += [f"- {target.name}: {' '.join(note.split())}" for note in target.notes]
        for scenario, m in target.runs.items():
            other = m.cores(m.other_cpu_s)
            if other > busy_cores:
                lines.append(
                    f"- {target.name}: {scenario}: other programs kept {other:.2f} cores "
                    "busy during the run; its numbers are disturbed"
                )
    return "\n".join(lines)
