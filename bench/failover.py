"""Failover: what clients see when one of two deployments fails half its calls.

Each scenario starts its own ``aigw up`` with one alias served by two mock deployments
(``mock_ttft_ms`` of upstream latency each), sends N non-streamed requests at a fixed
concurrency, and reports the success rate the clients saw and the latency percentiles,
with the added latency against the healthy case:

* ``healthy``: both deployments answer;
* ``failing, failover only``: deployment B fails 50 % of its calls with a 500; retries and
  cooldowns off, so every failure costs one failed attempt before the other deployment;
* ``failing, cooldown``: the same with the defaults (``allowed_fails`` 3 a minute, 5 s
  cooldown, one probe), so B is mostly left alone while it fails.

    .venv/bin/python bench/failover.py --requests 2000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run by path: the bench package lives in the root

from bench.processes import Service, free_port  # noqa: E402
from bench.targets import HOST, MASTER_KEY, default_aigw  # noqa: E402

MODEL = "bench"


@dataclass(frozen=True)
class Scenario:
    name: str
    error_rate: float
    router_settings: dict[str, Any]


SCENARIOS = [
    Scenario("healthy", 0.0, {}),
    Scenario("failing, failover only", 0.5, {"disable_cooldowns": True, "num_retries": 0}),
    Scenario("failing, cooldown", 0.5, {"allowed_fails": 3, "cooldown_time": 5}),
]


@dataclass
class Result:
    scenario: str
    ok: int
    total: int
    latencies_ms: list[float]
    seconds: float

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def config(scenario: Scenario, ttft_ms: int) -> dict[str, Any]:
    def deployment(name: str, error_rate: float) -> dict[str, Any]:
        params: dict[str, Any] = {"model": f"mock/{name}", "mock_ttft_ms": ttft_ms}
        if error_rate:
            params |= {"mock_error_status": 500, "mock_error_rate": error_rate}
        return {"model_name": MODEL, "litellm_params": params}

    return {
        "model_list": [deployment("bench-a", 0.0), deployment("bench-b", scenario.error_rate)],
        "router_settings": scenario.router_settings,
        "general_settings": {"master_key": MASTER_KEY},
    }


async def load(base_url: str, requests: int, concurrency: int) -> tuple[int, list[float]]:
    ok = 0
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    headers = {"authorization": f"Bearer {MASTER_KEY}"}
    limits = httpx.Limits(max_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal ok
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"q {i}"}]}
            started = time.perf_counter()
            try:
                r = await client.post(f"{base_url}/v1/chat/completions", json=body,
                                      headers=headers)
                good = r.status_code == 200
            except httpx.HTTPError:
                good = False
            latencies.append((time.perf_counter() - started) * 1000)
            ok += good

    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return ok, latencies


def run(scenario: Scenario, args: argparse.Namespace, work: Path) -> Result:
    path = work / f"{scenario.name.replace(' ', '-').replace(',', '')}.yaml"
    path.write_text(yaml.safe_dump(config(scenario, args.ttft_ms)))
    port = free_port()
    command = [args.aigw, "up", "--config", str(path), "--host", HOST, "--port", str(port),
               "--data-dir", str(work / f"data-{port}")]
    service = Service("aigw", command, work / f"aigw-{port}.log")
    service.start()
    try:
        service.wait_ready(f"http://{HOST}:{port}/health/readiness", 60)
        base = f"http://{HOST}:{port}"
        asyncio.run(load(base, min(200, args.requests), args.concurrency))  # warm-up
        started = time.perf_counter()
        ok, latencies = asyncio.run(load(base, args.requests, args.concurrency))
        return Result(scenario.name, ok, args.requests, latencies,
                      time.perf_counter() - started)
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--ttft-ms", type=int, default=20, help="mock upstream latency")
    parser.add_argument("--aigw", default=default_aigw())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aigw-failover-") as tmp:
        results = [run(s, args, Path(tmp)) for s in SCENARIOS]
    base = results[0]
    print(f"{args.requests} requests, concurrency {args.concurrency}, "
          f"mock upstream latency {args.ttft_ms} ms, deployment B failing 50 % with 500")
    print(f"{'scenario':<26}{'success':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'+p50 ms':>9}{'+p99 ms':>9}{'req/s':>8}")
    for r in results:
        print(f"{r.scenario:<26}{100 * r.ok / r.total:>8.2f}%{r.pct(0.5):>9.1f}"
              f"{r.pct(0.99):>9.1f}{r.pct(0.5) - base.pct(0.5):>9.1f}"
              f"{r.pct(0.99) - base.pct(0.99):>9.1f}{r.total / r.seconds:>8.0f}")
    mean = statistics.fmean(results[0].latencies_ms)
    print(f"(healthy mean {mean:.1f} ms)")


if __name__ == "__main__":
    main()
