"""How fast the console's pages render with a lot of usage in ClickHouse.

Fills chDB with ``--events`` usage events over the last 30 days (50 keys, 5 teams, 3
models), starts the gateway on that data dir with ``aigw up``, signs in (the master key,
then a virtual key whose id the events use), and times each page ``--rounds`` times, one
request at a time:

    .venv/bin/python bench/console.py --events 100000 --rounds 20
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import yaml

from accounting import migrations
from accounting.store import UsageStore, connect
from schemas.usage import UsageEvent, UsageStatus, event_id

MASTER = "sk-bench-console"
MODELS = ("gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-flash")
STATUSES = (UsageStatus.OK,) * 18 + (UsageStatus.ERROR, UsageStatus.CACHE_HIT)
PAGES = ("/ui", "/ui/logs", "/ui/logs?status=error", "/ui/keys", "/ui/models", "/ui/batches")


def event(i: int, now: datetime, span: timedelta, key_id: str) -> UsageEvent:
    request_id = f"bench-console-{i}"
    status = STATUSES[i % len(STATUSES)]
    return UsageEvent(
        event_id=event_id(request_id, 0), request_id=request_id,
        ts=now - span * ((i * 7919) % 10_000) / 10_000,
        key_id=key_id if i % 50 == 0 else f"key-{i % 50}", team_id=f"team-{i % 5}",
        model_alias=MODELS[i % 3], provider=("openai", "anthropic", "gemini")[i % 3],
        status=status, prompt_tokens=100 + i % 1000, completion_tokens=50 + i % 200,
        cost=Decimal(i % 1000) * Decimal("0.000001"), price_version="bench",
        latency_ms=float(20 + i % 900), http_status=500 if status is UsageStatus.ERROR else 200,
    )


def fill(data_dir: Path, count: int, key_id: str) -> float:
    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    migrations.apply(client)
    store = UsageStore(client)
    now = datetime.now(UTC)
    started = time.perf_counter()
    for first in range(0, count, 10_000):
        store.insert([event(i, now, timedelta(days=29), key_id)
                      for i in range(first, min(first + 10_000, count))])
    took = time.perf_counter() - started
    client.close()
    return took


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sign_in(client: httpx.Client, key: str) -> None:
    page = client.get("/ui/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token, page.text
    r = client.post("/ui/login", data={"login_token": token[1], "key": key})
    assert r.status_code == 303, r.text


def time_pages(client: httpx.Client, pages: tuple[str, ...], rounds: int) -> None:
    for path in pages:
        client.get(path)  # warm
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            r = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
        times.sort()
        p95 = times[max(0, int(len(times) * 0.95) - 1)]
        print(f"  {path:<24} p50 {statistics.median(times):7.1f} ms   p95 {p95:7.1f} ms"
              f"   max {times[-1]:7.1f} ms")


def up(config: Path, port: int, data: Path) -> subprocess.Popen[bytes]:
    """``aigw up`` on ``data``, once it answers ready."""
    gateway = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--config", str(config), "--port",
         str(port), "--data-dir", str(data)],
        env={**os.environ, "AIGW_LOG_LEVEL": "WARNING"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/readiness",
                         timeout=2).status_code == 200:
                return gateway
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or gateway.poll() is not None:
            gateway.terminate()
            raise SystemExit("the gateway did not start")
        time.sleep(0.3)


def screenshots(base: str, folder: Path) -> None:
    """The overview and the logs page as the master key sees them, 1280 px wide."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(base + "/ui/login")
        driver.find_element(By.ID, "key").send_keys(MASTER)
        driver.find_element(By.XPATH, "//button[text()='Sign in']").click()
        folder.mkdir(parents=True, exist_ok=True)
        for name, path in (("console-overview", "/ui"), ("console-logs", "/ui/logs")):
            driver.get(base + path)
            driver.save_screenshot(str(folder / f"{name}.png"))
            print(f"saved {folder / name}.png")
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--screenshots", type=Path, default=None,
                        help="save the overview and logs pages as PNGs here (Chromium)")
    parser.add_argument("--fill", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--key-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill is not None:
        took = fill(args.fill, args.events, args.key_id)
        print(f"inserted {args.events:,} usage events in {took:.1f} s")
        return
    with tempfile.TemporaryDirectory(prefix="aigw-console-") as tmp:
        work = Path(tmp)
        data = work / "data"
        data.mkdir()
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump({
            "model_list": [{"model_name": m, "litellm_params": {"model": f"mock/{m}"}}
                           for m in MODELS],
            "general_settings": {"master_key": MASTER}}))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        gateway = up(config, port, data)
        try:
            made = httpx.post(base + "/admin/keys", json={"alias": "viewer"}, timeout=10,
                              headers={"authorization": f"Bearer {MASTER}"}).json()
            gateway.terminate()
            gateway.wait(60)
            # In a process of its own: chDB holds its directory until the process ends.
            subprocess.run([sys.executable, __file__, "--fill", str(data), "--events",
                            str(args.events), "--key-id", made["id"]], check=True)
            gateway = up(config, port, data)
            deadline = time.monotonic() + 120
            while httpx.get(f"{base}/v1/usage/summary?days=30", timeout=30,
                            headers={"authorization": f"Bearer {MASTER}"}).status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("the accounting service did not come up")
                time.sleep(0.5)
            with httpx.Client(base_url=base, timeout=30) as client:
                sign_in(client, MASTER)
                summary = httpx.get(f"{base}/v1/usage/summary?days=30", timeout=30,
                                    headers={"authorization": f"Bearer {MASTER}"}).json()
                print(f"master key ({summary['events']:,} events in the last 30 days):")
                time_pages(client, PAGES, args.rounds)
            with httpx.Client(base_url=base, timeout=30) as client:
                sign_in(client, made["secret"])
                print("a virtual key (its own 2 % of the events):")
                time_pages(client, ("/ui", "/ui/logs"), args.rounds)
            if args.screenshots is not None:
                screenshots(base, args.screenshots)
        finally:
            gateway.terminate()
            gateway.wait(60)


if __name__ == "__main__":
    main()
