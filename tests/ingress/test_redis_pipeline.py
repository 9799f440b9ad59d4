"""Admission's script calls made together go to Redis in one write over admission's own
connection, each caller still getting its own answer, its own error, or the connection's
failure; the connection comes back after Redis does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ingress.admission.redis_impl import RedisAdmission, connect
from ingress.admission.redis_pipeline import AutoPipeline
from ingress.admission.redis_wire import Address
from ingress.admission.types import AdmitRequest, Scope
from tests.redis_server import RedisServer

ECHO = "return ARGV[1]"
FAIL = "return redis.error_reply('no ' .. ARGV[1])"
SET = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])"


def count_writes(pipeline: AutoPipeline) -> list[int]:
    """The number of commands in each write the pipeline makes to Redis."""
    assert pipeline.wire is not None
    writes: list[int] = []
    original = pipeline.wire.send

    def counted(commands: Sequence[Any], futures: Sequence[asyncio.Future[Any]]) -> None:
        writes.append(len(commands))
        original(commands, futures)

    pipeline.wire.send = counted  # type: ignore[method-assign]
    return writes


async def test_calls_in_one_turn_share_a_write_and_get_their_own_results(
    redis_server: RedisServer,
) -> None:
    client = connect(redis_server.url)
    pipeline = AutoPipeline(client)
    try:
        echo = await client.script_load(ECHO)
        fail = await client.script_load(FAIL)
        writes = count_writes(pipeline)
        calls = [pipeline.evalsha(echo if i % 3 else fail, [], [f"v{i}"]) for i in range(30)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert writes == [30]  # thirty calls, one write
        for i, result in enumerate(results):
            if i % 3:
                assert result == f"v{i}".encode()
            else:
                assert isinstance(result, ResponseError)
                assert f"no v{i}" in str(result)
        with pytest.raises(NoScriptError):
            await pipeline.evalsha("0" * 40, [], ["x"])
        assert await pipeline.evalsha(echo, [], ["alone"]) == b"alone"
        assert writes == [30, 1, 1]
    finally:
        await pipeline.aclose()
        await client.aclose()


async def test_a_caller_that_gives_up_leaves_the_others_their_own_replies(
    redis_server: RedisServer,
) -> None:
    client = connect(redis_server.url)
    pipeline = AutoPipeline(client)
    try:
        echo = await client.script_load(ECHO)
        assert await pipeline.evalsha(echo, [], ["warm"]) == b"warm"
        calls = [asyncio.ensure_future(pipeline.evalsha(echo, [], [str(i)])) for i in range(6)]
        await asyncio.sleep(0)  # the batch is written; then two callers give up
        calls[1].cancel()
        calls[4].cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert [r for i, r in enumerate(results) if i not in (1, 4)] == [b"0", b"2", b"3", b"5"]
        assert await pipeline.evalsha(echo, [], ["after"]) == b"after"
    finally:
        await pipeline.aclose()
        await client.aclose()


async def test_no_redis_fails_every_call_of_the_batch(
    private_redis_server: RedisServer,
) -> None:
    client = connect(private_redis_server.url)
    pipeline = AutoPipeline(client)
    try:
        echo = await client.script_load(ECHO)
        private_redis_server.stop()
        results = await asyncio.gather(
            *(pipeline.evalsha(echo, [], [str(i)]) for i in range(5)), return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results), results
    finally:
        await pipeline.aclose()
        await client.aclose()


async def test_a_connection_lost_mid_call_fails_its_calls_and_comes_back_with_redis(
    private_redis_server: RedisServer,
) -> None:
    client = connect(private_redis_server.url)
    pipeline = AutoPipeline(client)
    try:
        echo = await client.script_load(ECHO)
        assert await pipeline.evalsha(echo, [], ["before"]) == b"before"
        sleeper = await client.script_load(
            "local e = tonumber(redis.call('TIME')[1]) + 5 "
            "while tonumber(redis.call('TIME')[1]) < e do end return 1")
        waiting = asyncio.ensure_future(pipeline.evalsha(sleeper, [], []))
        await asyncio.sleep(0.1)  # Redis is inside the script when it is killed
        private_redis_server.kill()
        with pytest.raises((RedisConnectionError, RedisTimeoutError)):
            await waiting
        with pytest.raises(RedisConnectionError):
            await pipeline.evalsha(echo, [], ["down"])
        port = private_redis_server.port
        private_redis_server.start(port)
        echo = await client.script_load(ECHO)  # a new server holds no scripts
        assert await pipeline.evalsha(echo, [], ["back"]) == b"back"
    finally:
        await pipeline.aclose()
        await client.aclose()


async def test_a_redis_that_never_answers_is_a_timeout_and_the_connection_is_dropped() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()  # reads every command, answers none, until the client hangs up

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
        f"redis://127.0.0.1:{port}/0", socket_timeout=0.2))
    pipeline = AutoPipeline(client)
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(pipeline.evalsha("0" * 40, [], [str(i)]) for i in range(3)),
            return_exceptions=True)
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert 0.15 < time.monotonic() - started < 2
        assert pipeline.wire is not None and not pipeline.wire.connected
        with pytest.raises(RedisTimeoutError):  # a new connection, as silent
            await pipeline.evalsha("0" * 40, [], ["again"])
        assert len(accepted) == 2
    finally:
        await pipeline.aclose()
        await client.aclose()
        server.close()
        await server.wait_closed()


async def test_the_url_password_and_database_are_used(
    private_redis_server: RedisServer,
) -> None:
    admin = connect(private_redis_server.url)
    await admin.config_set("requirepass", "s3cret")
    await admin.aclose()
    base = f"127.0.0.1:{private_redis_server.port}"
    client = connect(f"redis://:s3cret@{base}/3")
    pipeline = AutoPipeline(client)
    wrong = connect(f"redis://:nope@{base}/3")
    refused = AutoPipeline(wrong)
    try:
        script = await client.script_load(SET)
        assert await pipeline.evalsha(script, ["k"], ["in-three"]) == b"in-three"
        assert await client.get("k") == b"in-three"  # redis-py's client, database 3
        in_zero = connect(f"redis://:s3cret@{base}/0")
        assert await in_zero.get("k") is None
        await in_zero.aclose()
        with pytest.raises(AuthenticationError):
            await refused.evalsha(script, ["k"], ["x"])
    finally:
        await pipeline.aclose()
        await refused.aclose()
        await client.aclose()
        await wrong.aclose()


def test_a_tls_url_keeps_redis_pys_client() -> None:
    assert Address.of(connect("rediss://127.0.0.1:6380/0")) is None
    unix = Address.of(connect("unix:///run/redis.sock?db=2"))
    assert unix is not None and (unix.path, unix.db) == ("/run/redis.sock", 2)


async def test_without_the_wire_the_calls_go_through_redis_pys_pipeline(
    redis_server: RedisServer,
) -> None:
    client = connect(redis_server.url)
    try:
        echo = await client.script_load(ECHO)
        fail = await client.script_load(FAIL)
        pipeline = AutoPipeline(client)
        pipeline.wire = None  # as for a TLS URL
        sent: list[int] = []
        original = client.pipeline

        def counted(*args: object, **kwargs: object) -> aioredis.client.Pipeline:
            sent.append(1)
            return original(*args, **kwargs)  # type: ignore[arg-type]

        client.pipeline = counted  # type: ignore[method-assign]
        calls = [pipeline.evalsha(echo if i % 3 else fail, [], [f"v{i}"]) for i in range(9)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert sent == [1]
        assert [r for i, r in enumerate(results) if i % 3] == [
            f"v{i}".encode() for i in range(9) if i % 3]
        assert all(isinstance(r, ResponseError) for i, r in enumerate(results) if not i % 3)
    finally:
        await client.aclose()


async def test_concurrent_admissions_each_count_once(redis_server: RedisServer) -> None:
    client = connect(redis_server.url)
    admission = RedisAdmission(client, namespace="aigw:pipe-test:")
    try:
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
        await admission.aclose()
        await client.aclose()
