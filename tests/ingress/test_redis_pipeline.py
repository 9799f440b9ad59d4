"""Admission's script calls made together go to Redis in one pipeline, each caller still
getting its own answer, its own error, or the connection's failure."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from ingress.admission.redis_impl import RedisAdmission, connect
from ingress.admission.redis_pipeline import AutoPipeline
from ingress.admission.types import AdmitRequest, Scope
from tests.redis_server import RedisServer

ECHO = "return ARGV[1]"
FAIL = "return redis.error_reply('no ' .. ARGV[1])"


async def test_calls_in_one_turn_share_a_pipeline_and_get_their_own_results(
    redis_server: RedisServer,
) -> None:
    client = connect(redis_server.url)
    try:
        echo = await client.script_load(ECHO)
        fail = await client.script_load(FAIL)
        pipeline = AutoPipeline(client)
        sent: list[int] = []
        original = client.pipeline

        def counted(*args: object, **kwargs: object) -> aioredis.client.Pipeline:
            sent.append(1)
            return original(*args, **kwargs)  # type: ignore[arg-type]

        client.pipeline = counted  # type: ignore[method-assign]
        calls = [pipeline.evalsha(echo if i % 3 else fail, [], [f"v{i}"]) for i in range(30)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert sent == [1]  # thirty calls, one pipeline
        for i, result in enumerate(results):
            if i % 3:
                assert result == f"v{i}".encode()
            else:
                assert isinstance(result, ResponseError)
                assert f"no v{i}" in str(result)
        with pytest.raises(NoScriptError):
            await pipeline.evalsha("0" * 40, [], ["x"])
        assert await pipeline.evalsha(echo, [], ["alone"]) == b"alone"
    finally:
        await client.aclose()


async def test_a_lost_connection_fails_every_call_of_the_batch(
    private_redis_server: RedisServer,
) -> None:
    client = connect(private_redis_server.url)
    try:
        echo = await client.script_load(ECHO)
        pipeline = AutoPipeline(client)
        private_redis_server.stop()
        results = await asyncio.gather(
            *(pipeline.evalsha(echo, [], [str(i)]) for i in range(5)), return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError | OSError) for r in results), results
    finally:
        await client.aclose()


async def test_concurrent_admissions_each_count_once(redis_server: RedisServer) -> None:
    client = connect(redis_server.url)
    try:
        admission = RedisAdmission(client, namespace="aigw:pipe-test:")
        await admission.load()
        await client.script_flush()  # the first calls meet NOSCRIPT and load again
        scope = Scope("key", "k-pipe", rpm=25, label="pipe")
        decisions = await asyncio.gather(*(
            admission.admit(AdmitRequest(f"r{i}:0", [scope], 10, Decimal("0.001")))
            for i in range(40)))
        assert sum(d.allowed for d in decisions) == 25
        await asyncio.gather(*(admission.settle(d.reservation, 5, Decimal("0.0005"))
                               for d in decisions if d.reservation is not None))
    finally:
        await client.aclose()
