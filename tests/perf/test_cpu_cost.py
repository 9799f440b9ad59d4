"""Issue 15: one call's CPU in the ingress or the worker may not grow by more than 30 %
against the committed baseline (tests/perf/cpu_baseline.json), in CPU time, not wall time.

The measurement is bench/cpu_cost.py (its docstring says how); rewrite the baseline with
``.venv/bin/python -m bench.cpu_cost --record`` after a change that is meant to cost more,
or once optimisations have landed, and commit it.

How steady the checked ratio is, measured 2026-12-04 on this 2-core VM with one code
snapshot (879b083), each run as the test makes it (6 rounds of 500 non-streamed and 200
streamed calls at 12 concurrent, 25-65 s a run). "Idle": 6 runs with other people's
benchmarks the only other load (load average 5-12); "hog": 3 runs with
``python -c "while 1: pass"`` on top (load average 11-13):

| ratio | idle, 6 runs | hog, 3 runs | all 9: highest / lowest | highest / median |
|---|---:|---:|---:|---:|
| ingress non-stream | 14.18-16.34 | 14.38-14.85 | 1.15 | 1.11 |
| ingress stream | 9.62-11.55 | 9.88-10.25 | 1.20 | 1.15 |
| worker non-stream | 13.17-14.62 | 13.34-14.37 | 1.11 | 1.03 |
| worker stream | 9.31-11.51 | 9.89-10.22 | 1.24 | 1.16 |

The baseline is the median of 3 runs, so a run landed within 16 % of it at worst, under
the 30 % limit. Divided by the calibration workload instead (stored and shown, not
checked), the same 9 runs spread 1.31-1.48x (highest / lowest); the first method tried
(min of 3 rounds of 1,500 + 500 calls over the calibration, at normal priority) spread
1.46-1.68x over 6 runs: too wide for 30 %.

A real regression fails it: 0.8 ms of busy loop added to every call in the ingress
(``Authenticator.check``; about +50 % on a non-streamed call, +35 % on a streamed one)
failed 2 runs of 2 (1.37x and 1.52x non-stream, 1.35x and 1.33x stream); the same build
without it passed.
"""

from __future__ import annotations

from bench.cpu_baseline import load_baseline, regressions, report
from bench.cpu_measurement import Plan, measure
from tests.redis_server import redis_binary


def test_cpu_per_call_of_ingress_and_worker_within_30_percent_of_the_baseline() -> None:
    redis_server = redis_binary()  # skips without redis-server (fails under CI)
    baseline = load_baseline()
    measurement = measure(Plan(), redis_server)
    found = regressions(measurement, baseline)
    assert not found, "\n".join(
        [*found, "", report(measurement, baseline), "",
         "If the extra CPU is intended: .venv/bin/python -m bench.cpu_cost --record"]
    )
