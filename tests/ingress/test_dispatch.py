"""The dispatcher against a real nats-server: frames in order, a gap refused, attempts
refused at once while NATS is away, and the shared reply inbox back after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from cli.nats_server import NatsServer
from core.bus_barrier import barrier
from ingress.admission.gatekeeper import Ticket
from ingress.dispatch import execution
from ingress.dispatch.dispatcher import (
    RECONNECT_GRACE,
    Disconnected,
    Dispatcher,
    FramesLost,
    ReaderTooSlow,
    Reply,
)
from ingress.routing.health_board import HealthBoard
from ingress.routing.router import Router
from schemas import subjects
from schemas.config import parse_config
from schemas.frames import DoneFrame, FrameKind, headers
from schemas.infer import Endpoint, InferRequest
from schemas.usage import TokenUsage


def _request() -> InferRequest:
    return InferRequest(request_id="r1", endpoint=Endpoint.CHAT, deployment_id="d",
                        model_alias="m", body={})


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def clients(server: NatsServer) -> AsyncIterator[tuple[Client, Client]]:
    """The ingress's connection and a worker's."""
    ingress = await nats.connect(server.url, max_reconnect_attempts=-1,
                                 reconnect_time_wait=0.2)
    worker = await nats.connect(server.url, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.2)
    yield ingress, worker
    await worker.close()
    await ingress.close()


async def _worker_inbox(worker: Client) -> asyncio.Queue[str]:
    """The reply subject of every attempt the worker receives."""
    inbox: asyncio.Queue[str] = asyncio.Queue()

    async def on_attempt(msg: nats.aio.msg.Msg) -> None:
        inbox.put_nowait(msg.reply)

    await worker.subscribe(subjects.infer("p"), cb=on_attempt)
    await barrier(worker)
    return inbox


async def _attempt_sent(clients: tuple[Client, Client]) -> tuple[Reply, str]:
    """An attempt sent by a started dispatcher, and the reply subject its worker got."""
    ingress, worker = clients
    attempts = await _worker_inbox(worker)
    dispatcher = Dispatcher(ingress)
    await dispatcher.start()
    reply = await dispatcher.send(_request(), "p")
    return reply, await asyncio.wait_for(attempts.get(), 5)


async def test_frames_arrive_in_order_and_a_gap_is_refused(
    clients: tuple[Client, Client],
) -> None:
    worker = clients[1]
    reply, subject = await _attempt_sent(clients)
    for seq, kind in ((1, FrameKind.CHUNK), (2, FrameKind.HEARTBEAT), (4, FrameKind.CHUNK)):
        await worker.publish(subject, b"{}", headers=headers(kind, seq))
    assert (await reply.next(5)).kind is FrameKind.CHUNK
    assert (await reply.next(5)).kind is FrameKind.HEARTBEAT
    with pytest.raises(FramesLost):
        await reply.next(5)
    # after the gap the reply reads on from the frame it got: a cancel report still lands
    await worker.publish(subject, b"{}", headers=headers(FrameKind.ERROR, 5))
    assert (await reply.next(5)).kind is FrameKind.ERROR


async def test_an_attempt_is_refused_at_once_while_nats_is_away_and_sent_once_it_is_back(
    server: NatsServer, clients: tuple[Client, Client],
) -> None:
    ingress, worker = clients
    attempts = await _worker_inbox(worker)
    dispatcher = Dispatcher(ingress)
    await dispatcher.start()

    server.kill()
    loop = asyncio.get_running_loop()
    while ingress.is_connected:
        await asyncio.sleep(0.01)
    began = loop.time()
    with pytest.raises(Disconnected):
        await dispatcher.send(_request(), "p")
    assert loop.time() - began < RECONNECT_GRACE + 1
    assert dispatcher.in_flight == 0

    server.start()
    while not (ingress.is_connected and worker.is_connected):
        await asyncio.sleep(0.01)
    await barrier(worker)
    reply = await dispatcher.send(_request(), "p")
    subject = await asyncio.wait_for(attempts.get(), 5)
    # the one inbox subscription of the dispatcher was made again by the client
    await worker.publish(subject, b"{}", headers=headers(FrameKind.DONE, 1))
    assert (await reply.next(5)).kind is FrameKind.DONE


async def test_an_attempt_never_heard_from_is_sent_again_under_a_number_of_its_own(
    clients: tuple[Client, Client],
) -> None:
    """The first copy's heartbeat is lost (its worker may still call the upstream and
    publish a usage event under that attempt's id); the copy sent again carries another
    attempt number, so its event is not dropped as the first one's duplicate."""
    ingress, worker = clients
    seen: list[InferRequest] = []

    async def on_attempt(msg: nats.aio.msg.Msg) -> None:
        seen.append(InferRequest.model_validate_json(msg.data))
        if len(seen) == 1:
            return  # took it, and its heartbeat went down with a NATS node
        done = DoneFrame(usage=TokenUsage(prompt_tokens=1, completion_tokens=1),
                         latency_ms=1, response={"ok": True})
        await worker.publish(msg.reply, done.model_dump_json().encode(),
                             headers=headers(FrameKind.DONE, 1))

    await worker.subscribe(subjects.infer("openai"), cb=on_attempt)
    await barrier(worker)
    dispatcher = Dispatcher(ingress)
    await dispatcher.start()
    config = parse_config({"model_list": [{"model_name": "m",
                                           "litellm_params": {"model": "openai/x"}}]}, {})
    router = Router(config, health=HealthBoard(None, config.router))
    admitted: list[int] = []

    async def admit(deployment: object, attempt: int) -> Ticket:
        admitted.append(attempt)
        return Ticket(None, Decimal(0), {})

    started = await execution.start(
        dispatcher, router.plan("m"), request_id="r2", endpoint=Endpoint.CHAT,
        model_alias="m", body={}, stream=False, heartbeat_interval=0.2,
        heartbeat_timeout=0.5, admit=admit, settle=lambda *_: None)
    assert started.deployment.upstream_model == "x"
    assert [r.attempt for r in seen] == [0, 1]
    assert admitted == [0]  # one reservation for both copies


async def test_a_reply_outrunning_its_reader_is_cut_off_bounded_and_keeps_the_report(
    clients: tuple[Client, Client],
) -> None:
    """A client reading a stream slowly: past the buffer's bound the worker is told to
    cancel at once, what waited is dropped, and the worker's report still settles."""
    ingress, worker = clients
    attempts = await _worker_inbox(worker)
    cancels: list[str] = []

    async def on_cancel(msg: nats.aio.msg.Msg) -> None:
        cancels.append(msg.subject)

    await worker.subscribe(subjects.cancel("r1"), cb=on_cancel)
    await barrier(worker)
    dispatcher = Dispatcher(ingress, stream_buffer=64 * 1024)
    await dispatcher.start()
    reply = await dispatcher.send(_request(), "p")
    subject = await asyncio.wait_for(attempts.get(), 5)
    chunk = b"x" * 16 * 1024
    await worker.publish(subject, chunk, headers=headers(FrameKind.CHUNK, 1))
    await barrier(worker)
    await asyncio.sleep(0.1)
    assert (await reply.next(5)).body == chunk  # read while within the bound
    for seq in range(2, 40):  # 600 KB nobody reads
        await worker.publish(subject, chunk, headers=headers(FrameKind.CHUNK, seq))
    await barrier(worker)
    deadline = asyncio.get_running_loop().time() + 5
    while not cancels:
        assert asyncio.get_running_loop().time() < deadline, "the worker was not told"
        await asyncio.sleep(0.01)
    done = DoneFrame(usage=TokenUsage(prompt_tokens=3, completion_tokens=9), latency_ms=1,
                     response={})
    await worker.publish(subject, done.model_dump_json().encode(),
                         headers=headers(FrameKind.DONE, 40))
    await barrier(worker)
    await asyncio.sleep(0.1)
    with pytest.raises(ReaderTooSlow):
        await reply.next(5)
    report = await reply.next_content(5)  # what the abandoning relay reads to settle
    assert report.kind is FrameKind.DONE
    assert DoneFrame.model_validate_json(report.body).usage.completion_tokens == 9


async def test_a_chunks_frame_is_read_as_its_chunks_in_order(
    clients: tuple[Client, Client],
) -> None:
    worker = clients[1]
    reply, subject = await _attempt_sent(clients)
    await worker.publish(subject, b'{"n":1}', headers=headers(FrameKind.CHUNK, 1))
    await worker.publish(subject, b'{"n":2}\n{"n":3}\n{"n":4}',
                         headers=headers(FrameKind.CHUNKS, 2))
    await worker.publish(subject, b'{"n":5}', headers=headers(FrameKind.CHUNK, 3))
    bodies = [(await reply.next(5)).body]
    while len(bodies) < 5:
        frame = reply.ready() or await reply.next(5)
        assert frame.kind is FrameKind.CHUNK
        bodies.append(frame.body)
    assert bodies == [b'{"n":%d}' % n for n in range(1, 6)]
    # the sequence goes on from the chunks frame's own number: no gap is seen
    await worker.publish(subject, b"{}", headers=headers(FrameKind.HEARTBEAT, 4))
    assert (await reply.next(5)).kind is FrameKind.HEARTBEAT
