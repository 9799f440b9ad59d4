"""Script calls made in the same turn of the event loop go to Redis in one pipeline.

Each admission costs an admit and a settle, each an ``EVALSHA``; sent one by one, every
call takes a write and a read of its own, and on this project's machine the system calls
alone were most of the ingress's CPU spent on admission under load. :class:`AutoPipeline`
queues the calls made while the loop runs other callbacks and sends them together at the
next turn: one write for all of them, each caller still getting its own result or error.
A lone call (one connection, a quiet gateway) waits one loop turn more, a few
microseconds.

The calls go over admission's own connection (:mod:`ingress.admission.redis_wire`), whose
replies resolve the callers' futures directly; a TLS Redis, which that connection does
not speak, is sent the same pipelines through redis-py's client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from ingress.admission.redis_wire import Address, Wire

_Call = tuple[str, Sequence[str], Sequence[Any], "asyncio.Future[Any]"]


class AutoPipeline:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        address = Address.of(client)
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout") or 0.5
        self.wire = None if address is None else Wire(address, float(timeout))
        self._pending: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((sha, keys, args, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await future

    async def aclose(self) -> None:
        if self.wire is not None:
            await self.wire.aclose()

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if self.wire is not None and self.wire.connected:
            self.wire.send(*_commands(batch))  # the replies resolve the futures
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            if self.wire is not None:
                await self.wire.call(*_commands(batch))
                return
            if len(batch) == 1:
                sha, keys, args, _ = batch[0]
                results: list[Any] = [await self.client.evalsha(sha, len(keys), *keys, *args)]
            else:
                pipe = self.client.pipeline(transaction=False)
                for sha, keys, args, _ in batch:
                    pipe.evalsha(sha, len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # the connection failed: every call in it did
            for *_, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller gave up waiting
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


def _commands(batch: list[_Call]) -> tuple[list[tuple[Any, ...]], list[asyncio.Future[Any]]]:
    return ([("EVALSHA", sha, len(keys), *keys, *args) for sha, keys, args, _ in batch],
            [future for *_, future in batch])
