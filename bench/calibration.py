"""A fixed pure-Python workload whose CPU time tracks the machine's speed.

Work of the same sort as a gateway's per call, in pure Python and the kernel's loopback:
encode and decode a chat body and a stream chunk, copy and rename dict keys, format
strings, and small writes and reads on a socket pair. bench/cpu_cost.py stores a call's
CPU over it beside the checked ratio.
"""

from __future__ import annotations

import subprocess
import sys

# Prints its CPU seconds.
_WORKLOAD = r"""
import json, socket, time
body = {"model": "bench", "max_tokens": 64, "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Say hello in twenty words. " * 4},
                     {"role": "assistant", "content": "Hello there, how are you today?"},
                     {"role": "user", "content": "Once more, with feeling."}]}
chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000,
         "model": "bench", "choices": [{"index": 0, "delta": {"content": " w7"},
         "finish_reason": None}], "usage": None}
left, right = socket.socketpair()
start = time.process_time()
total = 0
for i in range(3000):
    text = json.dumps(body)
    request = json.loads(text)
    request["user"] = f"key-{i % 17}"
    headers = {k.lower(): str(v) for k, v in request.items() if not isinstance(v, list)}
    for n in range(4):
        chunk["choices"][0]["delta"]["content"] = f" w{n}"
        line = "data: " + json.dumps(chunk, separators=(",", ":")) + "\n\n"
        event = json.loads(line[6:])
        total += len(event["choices"][0]["delta"]["content"]) + len(headers)
    left.send(line.encode())
    total += len(right.recv(4096))
print(time.process_time() - start, total)
"""


def calibration_seconds() -> float:
    """CPU seconds of the calibration workload, timed in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _WORKLOAD], capture_output=True, text=True, check=True
    )
    return float(done.stdout.split()[0])
