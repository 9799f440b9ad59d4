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

The servers, config and requests are bench/targets.py's, as for bench/overhead.py; the
measurement is bench/cpu_measurement.py, the baseline file bench/cpu_baseline.py and the
calibration workload bench/calibration.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import targets
from bench.cpu_baseline import BASELINE, baseline_document, load_baseline, regressions, report
from bench.cpu_measurement import Plan, measure


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
    redis_server = targets.redis_binary()
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
