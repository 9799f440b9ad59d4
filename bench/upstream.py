"""A fast fake OpenAI upstream for loopback benchmarks.

    python bench/upstream.py --port 9000 [--workers N]

Serves, in OpenAI's wire format:

- ``POST /v1/chat/completions``: a fixed ``chat.completion`` with usage; with
  ``"stream": true`` exactly 20 content chunks, one chunk carrying ``finish_reason``,
  a usage chunk (``"choices": []``) when ``stream_options.include_usage`` is true, then
  ``data: [DONE]``. Every SSE event is its own HTTP chunk and its own socket write, so a
  client sees events arrive separately, as from a real provider.
- ``POST /v1/embeddings``: one small vector per input, as floats or, when asked with
  ``encoding_format: "base64"`` (the ``openai`` SDK's default), as base64 float32.
- ``GET /v1/models`` and ``GET /health``.

It is a raw ``asyncio.Protocol`` over httptools' C parser on uvloop, with every
response built synchronously from pre-encoded templates: no tasks, no framework. On 2
cores that served about 3 times the non-streamed and 1.6 times the streamed requests per
second of the same answers from a raw ASGI callable under uvicorn (numbers in
bench/README.md): a fake upstream must not be the bottleneck.
Each response carries a fresh ``id`` so nothing downstream can mistake two calls for one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import signal
import socket
import struct
import sys
import time
from typing import Any, cast

import httptools

CONTENT_CHUNKS = 20
PROMPT_TOKENS = 12
COMPLETION_TOKENS = CONTENT_CHUNKS
EMBEDDING_DIMENSIONS = 8
MAX_CACHED_MODELS = 64

_ID = "@@ID@@"
_CREATED = "@@CREATED@@"


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _template(obj: Any) -> bytes:
    """Encode ``obj`` once; ``_ID``/``_CREATED`` become ``%b``/``%d`` slots filled per call."""
    text = _compact(obj).replace("%", "%%")
    text = text.replace(f'"{_ID}"', '"%b"').replace(f'"{_CREATED}"', "%d")
    return text.encode()


def _usage() -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class ChatTemplates:
    """Pre-encoded chat bodies for one model name."""

    def __init__(self, model: str) -> None:
        self.completion = _template(
            {
                "id": _ID,
                "object": "chat.completion",
                "created": _CREATED,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": " ".join(f"w{i}" for i in range(CONTENT_CHUNKS)),
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": _usage(),
                "service_tier": "default",
                "system_fingerprint": "fp_bench",
            }
        )
        self.chunks = self._chunks(model, include_usage=False)
        self.chunks_with_usage = self._chunks(model, include_usage=True)

    @staticmethod
    def _chunks(model: str, *, include_usage: bool) -> list[bytes]:
        chunk_head = {
            "id": _ID,
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": model,
            "system_fingerprint": "fp_bench",
        }
        # With include_usage, OpenAI puts "usage": null on every chunk but the last.
        tail: dict[str, Any] = {"usage": None} if include_usage else {}
        events: list[dict[str, Any]] = []
        for i in range(CONTENT_CHUNKS):
            delta: dict[str, Any] = {"content": f"w{i}" if i == 0 else f" w{i}"}
            if i == 0:
                delta = {"role": "assistant", **delta, "refusal": None}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
            events.append({**chunk_head, "choices": [choice], **tail})
        finish = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
        events.append({**chunk_head, "choices": [finish], **tail})
        if include_usage:
            events.append({**chunk_head, "choices": [], "usage": _usage()})
        return [b"data: " + _template(event) + b"\n\n" for event in events]


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(payload), payload)


_JSON_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
)
_DONE = _http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}


def _json_response(body: bytes, *, status: int = 200, keep_alive: bool = True) -> bytes:
    head = b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        status,
        _REASONS[status],
        len(body),
    )
    return head + (b"\r\n" if keep_alive else b"connection: close\r\n\r\n") + body


def _error(status: int, message: str, *, keep_alive: bool) -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return _json_response(_compact(body).encode(), status=status, keep_alive=keep_alive)


class Responder:
    """Turns one parsed request into response bytes; state shared by all connections."""

    def __init__(self) -> None:
        self._templates: dict[str, ChatTemplates] = {}
        self._ids = itertools.count()
        self._id_prefix = f"chatcmpl-bench{os.getpid()}x".encode()

    def _templates_for(self, model: str) -> ChatTemplates:
        templates = self._templates.get(model)
        if templates is None:
            if len(self._templates) >= MAX_CACHED_MODELS:
                self._templates.clear()
            templates = self._templates[model] = ChatTemplates(model)
        return templates

    def respond(self, method: bytes, path: bytes, body: bytes, keep_alive: bool) -> list[bytes]:
        path = path.split(b"?", 1)[0]
        if path in (b"/v1/chat/completions", b"/chat/completions"):
            if method != b"POST":
                return [_error(405, "use POST", keep_alive=keep_alive)]
            return self._chat(body, keep_alive)
        if path in (b"/v1/embeddings", b"/embeddings"):
            if method != b"POST":
                return [_error(405, "use POST", keep_alive=keep_alive)]
            return self._embeddings(body, keep_alive)
        if path in (b"/v1/models", b"/models"):
            models = {
                "object": "list",
                "data": [{"id": "bench", "object": "model", "created": 0, "owned_by": "bench"}],
            }
            return [_json_response(_compact(models).encode(), keep_alive=keep_alive)]
        if path == b"/health":
            return [_json_response(b'{"status":"ok"}', keep_alive=keep_alive)]
        return [_error(404, f"no route for {path.decode(errors='replace')}", keep_alive=keep_alive)]

    def _request_json(self, body: bytes) -> dict[str, Any] | None:
        try:
            data = json.loads(body)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _chat(self, body: bytes, keep_alive: bool) -> list[bytes]:
        request = self._request_json(body)
        if request is None:
            return [_error(400, "body is not a JSON object", keep_alive=keep_alive)]
        templates = self._templates_for(str(request.get("model", "bench")))
        call = (b"%b%d" % (self._id_prefix, next(self._ids)), int(time.time()))
        if not request.get("stream"):
            return [_json_response(templates.completion % call, keep_alive=keep_alive)]
        options = request.get("stream_options")
        with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        chunks = templates.chunks_with_usage if with_usage else templates.chunks
        head = _SSE_HEAD + (b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
        parts = [head + _http_chunk(chunks[0] % call)]
        parts.extend(_http_chunk(chunk % call) for chunk in chunks[1:])
        parts.append(_DONE)
        return parts

    def _embeddings(self, body: bytes, keep_alive: bool) -> list[bytes]:
        request = self._request_json(body)
        if request is None:
            return [_error(400, "body is not a JSON object", keep_alive=keep_alive)]
        raw = request.get("input", "")
        inputs = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
        vector = [round(0.1 * (i + 1), 3) for i in range(EMBEDDING_DIMENSIONS)]
        encoded: Any = vector
        if request.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data = [
            {"object": "embedding", "index": i, "embedding": encoded} for i in range(len(inputs))
        ]
        tokens = PROMPT_TOKENS * len(inputs)
        reply = {
            "object": "list",
            "data": data,
            "model": str(request.get("model", "bench")),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return [_json_response(_compact(reply).encode(), keep_alive=keep_alive)]


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: httptools calls the ``on_*`` hooks while ``feed_data`` runs."""

    def __init__(self, responder: Responder) -> None:
        self._responder = responder
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close()
        except httptools.HttpParserError:
            if self._transport is not None and not self._transport.is_closing():
                self._transport.write(_error(400, "malformed HTTP request", keep_alive=False))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        keep_alive = self._parser.should_keep_alive()
        method = self._parser.get_method()
        for part in self._responder.respond(method, self._url, b"".join(self._body), keep_alive):
            transport.write(part)
        if not keep_alive:
            self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def _serve(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    responder = Responder()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(lambda: Connection(responder), sock=sock, backlog=4096)
    async with server:
        await stop.wait()


def _run_worker(sock: socket.socket) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(sock))
    else:
        uvloop.run(_serve(sock))


def _supervise(sock: socket.socket, workers: int) -> None:
    """Fork ``workers`` processes that share one listening socket; forward TERM/INT."""
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _run_worker(sock)
            os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        os.waitpid(child, 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fast fake OpenAI upstream for benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the socket")
    args = parser.parse_args(argv)

    sock = _listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    sys.stderr.write(f"fake OpenAI upstream on http://{host}:{port}/v1, {args.workers} worker(s)\n")
    if args.workers <= 1:
        _run_worker(sock)
    else:
        _supervise(sock, args.workers)


if __name__ == "__main__":
    main()
