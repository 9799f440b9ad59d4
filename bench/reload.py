"""Hot reload: how long from saving the config file to the new model answering, and
whether requests running meanwhile notice anything.

Starts ``aigw up`` with one mock model, keeps a steady load on it from a few clients, then
rewrites the file N times, each time adding a new alias, and polls that alias until it
answers. Reports the time from write to first answer per reload, and the status codes
the steady load saw throughout (all must be 200).

    .venv/bin/python bench/reload.py --reloads 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run by path: the bench package lives in the root

from bench.processes import Service, free_port  # noqa: E402
from bench.targets import HOST, MASTER_KEY, default_aigw  # noqa: E402

HEADERS = {"authorization": f"Bearer {MASTER_KEY}"}


def config(aliases: list[str]) -> dict[str, Any]:
    return {
        "model_list": [{"model_name": alias,
                        "litellm_params": {"model": f"mock/{alias}", "mock_ttft_ms": 5}}
                       for alias in aliases],
        "general_settings": {"master_key": MASTER_KEY},
    }


async def steady(base: str, stop: asyncio.Event, seen: Counter[int], clients: int) -> None:
    async def loop(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            body = {"model": "steady", "messages": [{"role": "user", "content": "x"}]}
            try:
                r = await client.post(f"{base}/v1/chat/completions", json=body)
                seen[r.status_code] += 1
            except httpx.HTTPError:
                seen[0] += 1

    async with httpx.AsyncClient(timeout=30, headers=HEADERS) as client:
        await asyncio.gather(*(loop(client) for _ in range(clients)))


async def reloads(base: str, path: Path, count: int) -> list[float]:
    aliases = ["steady"]
    took: list[float] = []
    async with httpx.AsyncClient(timeout=10, headers=HEADERS) as client:
        for i in range(count):
            aliases.append(f"added-{i}")
            started = time.monotonic()
            await asyncio.to_thread(path.write_text, yaml.safe_dump(config(aliases)))
            body = {"model": aliases[-1], "messages": [{"role": "user", "content": "x"}]}
            url = f"{base}/v1/chat/completions"
            while (await client.post(url, json=body)).status_code != 200:
                if time.monotonic() - started > 30:
                    raise RuntimeError(f"{aliases[-1]} was not served within 30 s")
                await asyncio.sleep(0.01)
            took.append(time.monotonic() - started)
            await asyncio.sleep(1.5)  # a new mtime for the next write
    return took


async def measure(
    base: str, path: Path, count: int, clients: int
) -> tuple[list[float], Counter[int]]:
    stop = asyncio.Event()
    seen: Counter[int] = Counter()
    load = asyncio.create_task(steady(base, stop, seen, clients))
    try:
        took = await reloads(base, path, count)
    finally:
        stop.set()
        await load
    return took, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4, help="steady load meanwhile")
    parser.add_argument("--aigw", default=default_aigw())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aigw-reload-") as tmp:
        work = Path(tmp)
        path = work / "config.yaml"
        path.write_text(yaml.safe_dump(config(["steady"])))
        port = free_port()
        service = Service("aigw", [args.aigw, "up", "--config", str(path), "--host", HOST,
                                   "--port", str(port), "--data-dir", str(work / "data")],
                          work / "aigw.log")
        service.start()
        try:
            base = f"http://{HOST}:{port}"
            service.wait_ready(f"{base}/health/readiness", 60)
            took, seen = asyncio.run(measure(base, path, args.reloads, args.clients))
        finally:
            service.stop()
    ms = sorted(t * 1000 for t in took)
    print(f"{len(ms)} reloads (file polled every 1 s): write -> new model answering "
          f"median {statistics.median(ms):.0f} ms, min {ms[0]:.0f}, max {ms[-1]:.0f}")
    print(f"steady load meanwhile ({args.clients} clients): "
          + ", ".join(f"{status or 'transport error'}: {n}" for status, n in sorted(seen.items())))
    if set(seen) != {200}:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
