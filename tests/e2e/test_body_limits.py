"""Bodies capped per route while they stream in: a 413 in OpenAI's shape before the memory
is spent, whether the client declares the length or streams the body chunked, and the
ingress answering its health checks all the while."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import MASTER_KEY
from tests.harness import Gateway

pytestmark = pytest.mark.e2e

AUTH = f"Bearer {MASTER_KEY}"
CAP = 8 * 1024 * 1024  # AIGW_MAX_REQUEST_BYTES's default


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _send_chunked(port: int, path: str, total: int, chunk: int = 1024 * 1024
                  ) -> tuple[int, dict[str, str], bytes, int]:
    """POST ``total`` bytes chunked, no Content-Length, stopping as soon as the server
    answers; the response and how many bytes went out."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall((f"POST {path} HTTP/1.1\r\nhost: gw\r\nauthorization: {AUTH}\r\n"
                      "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                      ).encode())
        piece = f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n"
        sent = 0
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break  # the server answered: stop sending
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += chunk
        status, headers, body = _read_response(sock)
        return status, headers, body, sent
    finally:
        sock.close()


def _assert_too_large(status: int, body: bytes) -> None:
    assert status == 413, body[:300]
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_too_large")


def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_read(
        gateway: Gateway) -> None:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    try:
        sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
                      f"authorization: {AUTH}\r\ncontent-type: application/json\r\n"
                      f"content-length: {400 * 1024 * 1024}\r\n\r\n").encode())
        # Not a byte of the 400 MB follows: the answer comes all the same.
        status, headers, body = _read_response(sock)
    finally:
        sock.close()
    _assert_too_large(status, body)
    assert headers.get("x-request-id", "").startswith("req_")
    assert str(CAP) in json.loads(body)["error"]["message"].replace(",", "")


def test_a_400_mb_chunked_body_is_cut_off_at_the_cap_with_memory_flat_and_health_served(
        gateway: Gateway) -> None:
    assert gateway.ingress is not None
    pid = gateway.ingress.pid
    before = _rss_mb(pid)
    peak = before
    slowest = 0.0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak, slowest
        while not done.is_set():
            peak = max(peak, _rss_mb(pid))
            started = time.monotonic()
            r = httpx.get(gateway.base_url + "/health/liveliness", timeout=10)
            assert r.status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        status, _, body, sent = _send_chunked(gateway.port, "/v1/chat/completions",
                                              400 * 1024 * 1024)
    finally:
        done.set()
        watcher.join(15)
    print(f"\n400 MB chunked body: refused after {sent / 2**20:.0f} MB sent, ingress RSS "  # noqa: T201
          f"{before:.0f} -> peak {peak:.0f} MB, slowest liveliness {slowest * 1000:.0f} ms")
    _assert_too_large(status, body)
    assert sent < 64 * 1024 * 1024, f"{sent:,} bytes went out before the refusal"
    assert peak - before < 48, f"ingress RSS grew {peak - before:.0f} MB"
    assert slowest < 1.0, f"a liveliness check took {slowest:.2f} s"


def test_other_routes_have_a_small_cap_and_bodies_under_the_caps_still_work(
        gateway: Gateway) -> None:
    big = {"alias": "x" * (2 * 1024 * 1024)}
    r = httpx.post(gateway.base_url + "/admin/keys", json=big, timeout=30,
                   headers={"authorization": AUTH})
    _assert_too_large(r.status_code, r.content)
    status, _, body, _ = _send_chunked(gateway.port, "/admin/keys", 4 * 1024 * 1024)
    _assert_too_large(status, body)
    # A prompt of 6 MB is under the inference cap.
    r = httpx.post(gateway.base_url + "/v1/chat/completions", timeout=60,
                   headers={"authorization": AUTH},
                   json={"model": "gpt-4o-mini",
                         "messages": [{"role": "user", "content": "y" * (6 * 1024 * 1024)}]})
    assert r.status_code == 200, r.text[:300]
