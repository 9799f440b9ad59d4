"""An OTLP/HTTP endpoint that takes trace exports and throws them away, for measuring what
tracing costs the gateway itself rather than a collector sharing its cores.

    .venv/bin/python bench/otlp_sink.py --port 4318 &
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 .venv/bin/python bench/overhead.py ...

It reads each request's body, answers 200 with an empty ``ExportTraceServiceResponse``
(an empty protobuf message is zero bytes) and counts requests and bytes; on SIGINT or
SIGTERM it prints the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n"
            b"content-length: 0\r\n\r\n")


class Counts:
    requests = 0
    body_bytes = 0


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            await reader.readexactly(length)
            Counts.requests += 1
            Counts.body_bytes += length
            writer.write(RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(f"otlp sink: {Counts.requests} exports, {Counts.body_bytes:,} bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318)
    asyncio.run(main(parser.parse_args().port))
