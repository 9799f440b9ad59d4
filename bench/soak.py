"""A soak: ``aigw up`` in front of the fast fake upstream for minutes on end.

    .venv/bin/python bench/soak.py --minutes 10 --connections 16

Streamed and plain chat calls on ``--connections`` connections, a batch running beside
them, and every ``--sample`` seconds the RSS, open file descriptors and threads of every
process of the gateway (``aigw up``, nats-server, each worker, accounting). At the end:
the calls made against the usage the gateway accounted (they must be equal), the errors
(must be none), the RSS trend over the second half of the run (within 5 %), and
open descriptors within 3 per thread plus a fixed base.
Writes ``bench/results/soak-<time>.json`` and prints a summary; exit status 1 if a check
failed.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run by path: the bench package lives in the root

from bench.processes import _descendants, _processes, _program  # noqa: E402
from bench.targets import (  # noqa: E402
    BENCH_DIR,
    MASTER_KEY,
    MODEL,
    config_yaml,
    default_aigw,
    gateway,
    upstream,
)

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


@dataclass
class Tally:
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.ok += 1
            else:
                self.errors[error] += 1


def _call(client: httpx.Client, stream: bool) -> str | None:
    body = {"model": MODEL, "stream": stream,
            "messages": [{"role": "user", "content": "soak"}]}
    try:
        if not stream:
            r = client.post("/v1/chat/completions", json=body)
            return None if r.status_code == 200 else f"{r.status_code} {r.text[:80]}"
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                r.read()
                return f"{r.status_code} {r.text[:80]}"
            last = ""
            for line in r.iter_lines():
                if line.startswith("data: "):
                    last = line
            return None if last == "data: [DONE]" else f"stream ended with {last[:80]}"
    except httpx.HTTPError as exc:
        return f"transport {type(exc).__name__}"


def _load(base_url: str, stop: threading.Event, tally: Tally, index: int) -> None:
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=60) as client:
        n = 0
        while not stop.is_set():
            tally.add(_call(client, stream=(index + n) % 2 == 0))
            n += 1


def _sample(root: int) -> dict[str, dict[str, int]]:
    """RSS (kB), open descriptors and threads per process of the tree, by program."""
    found: dict[str, dict[str, int]] = {}
    for proc in _descendants(root, _processes()):
        label = f"{_program(proc.pid)}[{proc.pid}]"
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            fds = len(list(Path(f"/proc/{proc.pid}/fd").iterdir()))
        except OSError:
            continue
        values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        found[label] = {"rss_kb": int(values["VmRSS"].split()[0]), "fds": fds,
                        "threads": int(values["Threads"].strip())}
    return found


def _batch(base_url: str, items: int) -> str:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=MASTER_KEY)
    raw = "".join(json.dumps({"custom_id": f"soak-{i}", "method": "POST",
                              "url": "/v1/chat/completions",
                              "body": {"model": MODEL, "messages": [
                                  {"role": "user", "content": f"batch {i}"}]}}) + "\n"
                  for i in range(items)).encode()
    file = client.files.create(file=("soak.jsonl", io.BytesIO(raw)), purpose="batch")
    return client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                 completion_window="24h").id


def _requests_accounted(base_url: str) -> int:
    r = httpx.get(base_url + "/v1/usage/summary", headers=AUTH, params={"days": 1}, timeout=30)
    r.raise_for_status()
    return int(r.json().get("requests", 0))


FD_BASE = 64  # sockets, pipes, logs and data files of a process, before its threads


def _trend_pct(points: list[tuple[float, int]]) -> float:
    """The least-squares trend of RSS over the samples, as a percentage of its mean over
    their span: a leak grows steadily, where a garbage collector's sawtooth (nats-server's
    Go heap) goes up and down around a level that does not move."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / spread if spread else 0.0
    return slope * (points[-1][0] - points[0][0]) / mean_v * 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--batch-items", type=int, default=2000)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="aigw-soak-"))
    config = work / "config.yaml"
    fake = upstream(work, workers=1)
    fake.service.start()
    fake.wait_ready()
    config.write_text(config_yaml(fake.port))
    gw = gateway(default_aigw(), config, work, work)
    gw.service.start()
    try:
        gw.wait_ready()
        batch_id = _batch(gw.base_url, args.batch_items)
        tally, stop = Tally(), threading.Event()
        threads = [threading.Thread(target=_load, args=(gw.base_url, stop, tally, i),
                                    daemon=True) for i in range(args.connections)]
        for thread in threads:
            thread.start()
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        end = started + args.minutes * 60
        while True:
            samples.append({"t": round(time.monotonic() - started), "calls": tally.ok,
                            "processes": _sample(gw.service.pid)})
            print(f"t={samples[-1]['t']}s calls={tally.ok} errors={sum(tally.errors.values())}",
                  file=sys.stderr)
            if time.monotonic() >= end:
                break
            time.sleep(min(args.sample, max(0.0, end - time.monotonic())))
        stop.set()
        for thread in threads:
            thread.join(120)
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=MASTER_KEY)
        batch = client.batches.retrieve(batch_id)
        deadline = time.monotonic() + 300
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
            batch = client.batches.retrieve(batch_id)
        done_items = batch.request_counts.completed if batch.request_counts else 0
        expected = tally.ok + sum(tally.errors.values()) + done_items
        accounted = -1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            accounted = _requests_accounted(gw.base_url)
            if accounted >= expected:
                break
            time.sleep(2)
        final = _sample(gw.service.pid)
    finally:
        gw.service.stop()
        fake.service.stop()

    half = [s for s in samples if s["t"] >= args.minutes * 30]
    growth: dict[str, float] = {}
    peaks: dict[str, float] = {}
    for label in samples[-1]["processes"]:
        points = [(s["t"], s["processes"][label]["rss_kb"]) for s in half
                  if label in s["processes"]]
        if len(points) >= 3 and points[0][1]:
            growth[label] = round(_trend_pct(points), 1)
            series = [rss for _, rss in points]
            peaks[label] = round((max(series) - series[0]) / series[0] * 100, 1)
    # Descriptors: ClickHouse (chDB, in accounting) keeps three /proc/<pid>/task/<tid>
    # files open for each of its threads that has run a query, so its count follows its
    # threads (bounded by its pools), not the calls made.
    fd_bounded = {label: p["fds"] <= 3 * p["threads"] + FD_BASE for label, p in final.items()}
    report = {
        "minutes": args.minutes, "connections": args.connections, "calls_ok": tally.ok,
        "errors": dict(tally.errors), "batch": {"id": batch_id, "status": batch.status,
                                                "completed": done_items},
        "usage_requests_accounted": accounted, "calls_and_items": expected,
        "rss_trend_second_half_pct": growth, "rss_peak_over_start_second_half_pct": peaks,
        "fds_within_3_per_thread": fd_bounded, "first": samples[0]["processes"],
        "last": final, "samples": samples,
    }
    out = BENCH_DIR / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items()
                      if k not in ("samples", "first", "last")}, indent=1))
    print("fds first -> last:", {k: v["fds"] for k, v in samples[0]["processes"].items()},
          "->", {k: v["fds"] for k, v in final.items()})
    ok = (not tally.errors and accounted == expected and batch.status == "completed"
          and all(g <= 5.0 for g in growth.values()) and all(fd_bounded.values()))
    print("PASS" if ok else "FAIL", "report:", out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
