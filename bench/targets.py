"""The servers an overhead run measures: the fake upstream, ``aigw up``, LiteLLM's proxy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.processes import Service, free_port

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LITELLM_VENV = BENCH_DIR / ".litellm-venv"
HOST = "127.0.0.1"
MASTER_KEY = "sk-master"
MODEL = "bench"
UPSTREAM = "upstream direct"
GATEWAY = "ai-gateway"
LITELLM = "litellm"

_MESSAGES = [{"role": "user", "content": "Say hello in twenty words."}]
# What a run sends: a small chat, and the same streamed with a usage chunk at its end.
CHAT_BODY: dict[str, object] = {"model": MODEL, "messages": _MESSAGES, "max_tokens": 64}
STREAM_BODY: dict[str, object] = {
    **CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}
}


@dataclass
class Target:
    """An HTTP server to measure, the process that serves it, and how to tell it is up."""

    name: str
    service: Service
    port: int
    ready_path: str
    ready_timeout_s: float
    version: str = ""
    # The key the load is sent with: the master key, or a virtual key (``use_virtual_key``).
    api_key: str = MASTER_KEY
    features: str = "master key"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    def wait_ready(self) -> float:
        """Poll its ready path until it answers 200; returns the seconds it took."""
        return self.service.wait_ready(self.base_url + self.ready_path, self.ready_timeout_s)


def config_yaml(upstream_port: int) -> str:
    """LiteLLM's config format, which the gateway reads unchanged; one file serves both."""
    return (
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f'      api_base: "http://{HOST}:{upstream_port}/v1"\n'
        "      api_key: sk-bench\n"
        # gpt-4o-mini's prices, so that every call costs money and the budget counts it.
        "      input_cost_per_token: 0.00000015\n"
        "      output_cost_per_token: 0.0000006\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )


def upstream(logs: Path, workers: int) -> Target:
    port = free_port()
    command = [sys.executable, str(BENCH_DIR / "upstream.py"), "--host", HOST]
    command += ["--port", str(port), "--workers", str(workers)]
    return Target(
        UPSTREAM, Service("upstream", command, logs / "upstream.log"), port, "/health", 15
    )


def gateway(
    aigw: str, config: Path, work: Path, logs: Path, redis_url: str | None = None
) -> Target:
    """``aigw up``; with ``redis_url``, its limits, budgets and cache live in that Redis."""
    port = free_port()
    command = [aigw, "up", "--config", str(config), "--host", HOST, "--port", str(port)]
    command += ["--data-dir", str(work / "aigw-data")]
    env = {"REDIS_URL": redis_url} if redis_url else {}
    service = Service("ai-gateway", command, logs / "ai-gateway.log", env=env, cwd=work)
    return Target(GATEWAY, service, port, "/health/readiness", 60, git_revision())


def redis_binary() -> str | None:
    """Where ``redis-server`` is installed, or None."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)


def redis(binary: str, work: Path, logs: Path) -> tuple[Service, str]:
    """A private ``redis-server`` on a free port, and its URL."""
    port = free_port()
    command = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly",
               "no", "--dir", str(work)]
    return Service("redis", command, logs / "redis.log"), f"redis://{HOST}:{port}/0"


# High enough never to refuse the benchmark's load, but checked and counted on every call.
KEY_LIMITS = {"rpm": 10_000_000, "tpm": 10_000_000_000, "max_parallel": 100_000,
              "daily_budget_usd": "100000"}


# What a run's notes call each limit of its key.
_LIMIT_NAMES = {"max_parallel": "parallel", "daily_budget_usd": "daily budget",
                "monthly_budget_usd": "monthly budget"}


def use_virtual_key(target: Target, limits: Mapping[str, object] = KEY_LIMITS) -> None:
    """Send the load with a new virtual key of ``limits`` (by default rate limits, a
    parallel cap and a daily budget, all enforced per call) instead of the master key."""
    with httpx.Client(timeout=30.0) as client:
        response = client.post(
            target.base_url + "/admin/keys", headers=target.auth,
            json={"alias": "bench", "limits": dict(limits), "allowed_models": [MODEL]})
        response.raise_for_status()
        target.api_key = response.json()["secret"]
    *names, last = [_LIMIT_NAMES.get(name, name) for name in limits]
    target.features = "virtual key: " + ", ".join(names) + f" and {last}"


def litellm(config: Path, workers: int, work: Path, logs: Path) -> Target:
    port = free_port()
    command = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", HOST]
    command += ["--port", str(port), "--num_workers", str(workers)]
    service = Service(
        "litellm",
        command,
        logs / "litellm.log",
        # Loopback only: without this LiteLLM retries a download of its price map at start.
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        cwd=work,
    )
    return Target(LITELLM, service, port, "/health/liveliness", 120, litellm_version())


def default_aigw() -> str:
    local = REPO_DIR / ".venv" / "bin" / "aigw"
    return str(local) if local.exists() else (shutil.which("aigw") or str(local))


def litellm_missing(setup: bool) -> str | None:
    """Why LiteLLM cannot run, or None when it can; installs it first when ``setup``."""
    if (LITELLM_VENV / "bin" / "litellm").exists():
        return None
    if not setup:
        return f"{LITELLM_VENV} is absent: run bench/litellm_setup.sh or pass --setup-litellm"
    sys.stderr.write("installing LiteLLM into bench/.litellm-venv (takes a few minutes)\n")
    done = subprocess.run(["bash", str(BENCH_DIR / "litellm_setup.sh")], check=False)
    if done.returncode != 0 or not (LITELLM_VENV / "bin" / "litellm").exists():
        return "bench/litellm_setup.sh failed"
    return None


def _output(command: list[str]) -> str:
    """The first line the command printed, or ""."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def litellm_version() -> str:
    script = "import importlib.metadata as m; print(m.version('litellm'))"
    return _output([str(LITELLM_VENV / "bin" / "python"), "-c", script]) or "?"


def git_revision(*paths: str, short: bool = True) -> str:
    """The commit benchmarked, marked ``+changes`` when tracked files (under ``paths``,
    if any are given) differ from it."""
    git = ["git", "-C", str(REPO_DIR)]
    revision = _output([*git, "rev-parse", *(["--short"] if short else []), "HEAD"]) or "?"
    changed = _output([*git, "status", "--porcelain", "-uno", "--", *paths])
    return revision + ("+changes" if changed else "")


def wrk_version(wrk: str) -> str:
    return _output([wrk, "-v"]).split(" Copyright")[0] or "?"
