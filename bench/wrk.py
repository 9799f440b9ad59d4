"""Run ``wrk`` with a POST body and read its numbers back as JSON.

wrk's text report rounds latencies to two digits and hides the error breakdown when
there is none, so the generated Lua script prints one ``BENCH_RESULT {json}`` line from
wrk's ``done`` hook instead, with exact microsecond percentiles and every error counter.
wrk counts a response as a status error when its status is 400 or more.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_MARKER = "BENCH_RESULT "

_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{headers}

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


class WrkError(RuntimeError):
    """wrk did not run or did not print a result."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(f"{message}\n{output[-2000:]}")
        self.output = output


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in milliseconds, measured by wrk from send to last byte."""

    connections: int
    requests: int
    duration_s: float
    bytes: int
    non_2xx: int
    socket_errors: dict[str, int]
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def failed(self) -> bool:
        """A run with any status >= 400, any timeout, or no request at all measures nothing."""
        return self.non_2xx > 0 or self.socket_errors.get("timeout", 0) > 0 or self.requests == 0

    def problems(self) -> str:
        found = [f"{self.non_2xx} non-2xx"] if self.non_2xx else []
        found += [f"{count} {kind} errors" for kind, count in self.socket_errors.items() if count]
        if self.requests == 0:
            found.append("no request completed")
        return ", ".join(found)

    @classmethod
    def from_output(cls, output: str, connections: int) -> WrkResult:
        for line in output.splitlines():
            if line.startswith(_MARKER):
                raw = json.loads(line[len(_MARKER) :])
                break
        else:
            raise WrkError("wrk printed no result line", output)
        return cls(
            connections=connections,
            requests=raw["requests"],
            duration_s=raw["duration_us"] / 1e6,
            bytes=raw["bytes"],
            non_2xx=raw["status"],
            socket_errors={kind: raw[kind] for kind in ("connect", "read", "write", "timeout")},
            mean_ms=raw["mean"] / 1e3,
            p50_ms=raw["p50"] / 1e3,
            p90_ms=raw["p90"] / 1e3,
            p99_ms=raw["p99"] / 1e3,
            p999_ms=raw["p999"] / 1e3,
            max_ms=raw["max"] / 1e3,
        )


def ensure_wrk() -> str:
    """Path to wrk; installs the Debian package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("wrk is not installed: run `apt-get install -y wrk` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get installed wrk but it is not on PATH")
    return found


def lua_script(body: str, headers: dict[str, str], delay_ms: float | None = None) -> str:
    """The script; with ``delay_ms``, each connection waits that long on average before each
    request (wrk's ``delay`` hook; drawn at random, so that the connections' requests arrive
    spread out rather than in bursts), which paces the load instead of sending as fast as
    answers come."""
    if "]==]" in body:
        raise ValueError("request body must not contain ']==]'")
    lines = [
        f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}" for name, value in headers.items()
    ]
    if delay_ms is not None:  # uniform on [0, 2 x delay_ms]: connections do not fall into step
        lines.append(f"delay = function() return math.random() * {2 * delay_ms:.3f} end")
    return _SCRIPT.format(body=body, headers="\n".join(lines), marker=_MARKER)


def run_wrk(
    url: str,
    body: str,
    *,
    connections: int,
    duration_s: float,
    threads: int | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    wrk: str = "wrk",
    delay_ms: float | None = None,
) -> WrkResult:
    """POST ``body`` to ``url`` over ``connections`` keep-alive connections for ``duration_s``
    (each waiting ``delay_ms`` before every request, when given)."""
    threads = min(threads or 2, connections)
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(lua_script(body, headers or {}, delay_ms))
        command = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            f"--timeout={timeout_s:g}s",
            "-s",
            str(script),
            url,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}", output)
    return WrkResult.from_output(output, connections)
