"""A worker following the config in NATS KV: reloads reach it, an ingress a step ahead or
behind it still finds its deployments, and a revision it cannot read changes nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from uuid import uuid4

import httpx
import nats
import pytest
import yaml
from nats.aio.client import Client

from cli.nats_server import NatsServer
from core.config_feed import ConfigFeed, Revision
from schemas.config import GatewayConfig, parse_config_text
from schemas.config_doc import ConfigDocument
from schemas.frames import KIND_HEADER, DoneFrame, ErrorFrame, FrameKind
from schemas.infer import Endpoint, InferRequest
from workers.config_follow import ConfigFollower
from workers.providers import create_provider
from workers.service import WorkerService

ENV = {"MOCK_WORDS": "hello"}


def text_of(*aliases: str, reply: str = "os.environ/MOCK_WORDS") -> str:
    return yaml.safe_dump({"model_list": [
        {"model_name": a, "litellm_params": {"model": f"mock/{a}", "mock_response": reply}}
        for a in aliases]})


def parsed(text: str) -> GatewayConfig:
    return parse_config_text(text, ENV, "test")


class Replies:
    """Frames a worker publishes, by reply subject."""

    def __init__(self) -> None:
        self.frames: dict[str, list[tuple[FrameKind, bytes]]] = {}

    async def publish(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        kind = FrameKind(headers[KIND_HEADER])
        self.frames.setdefault(subject, []).append((kind, body))


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@dataclass
class Worker:
    service: WorkerService
    follower: ConfigFollower
    feed: ConfigFeed  # the ingress's side: what publishes
    replies: Replies


@pytest.fixture
async def worker(nc: Client) -> AsyncIterator[Worker]:
    key = f"test-{uuid4().hex[:12]}"
    replies = Replies()
    async with httpx.AsyncClient() as client:
        service = WorkerService("mock", create_provider("mock", client), parsed(text_of("a")),
                                replies.publish)
        follower = ConfigFollower(service, client, key, env=ENV)
        service.refresh = follower.refresh
        feed = ConfigFeed(nc, key)
        await feed.open()
        await follower.start(nc)
        yield Worker(service, follower, feed, replies)
        await follower.stop()


async def publish(feed: ConfigFeed, text: str) -> int:
    last, _ = await feed.latest()
    revision = await feed.publish(ConfigDocument.of(text, "test:/c.yaml", 1.0), last)
    assert revision is not None
    return revision


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def run(service: WorkerService, replies: Replies, deployment_id: str) -> FrameKind:
    reply = f"_INBOX.{uuid4().hex}"
    request = InferRequest(request_id=uuid4().hex, endpoint=Endpoint.CHAT,
                           deployment_id=deployment_id, model_alias="x",
                           body={"messages": [{"role": "user", "content": "hi"}]})
    await service.handle(request.model_dump_json().encode(), reply)
    kind, body = replies.frames[reply][-1]
    (ErrorFrame if kind is FrameKind.ERROR else DoneFrame).model_validate_json(body)
    return kind


async def test_a_published_revision_reaches_the_worker(worker: Worker) -> None:
    service, feed, replies = worker.service, worker.feed, worker.replies
    await publish(feed, text_of("a", "b"))
    await until(lambda: service.config.model_names == ["a", "b"])
    assert await run(service, replies, service.config.group("b")[0].id) is FrameKind.DONE


async def test_an_attempt_for_a_deployment_not_seen_yet_reads_the_latest_config(
    worker: Worker,
) -> None:
    service, feed, replies = worker.service, worker.feed, worker.replies
    await worker.follower.stop()  # the watch lags: this revision never comes through it
    text = text_of("a", "c")
    new_id = parsed(text).group("c")[0].id
    await publish(feed, text)
    assert await run(service, replies, new_id) is FrameKind.DONE


async def test_a_deployment_removed_a_moment_ago_still_answers(worker: Worker) -> None:
    service, feed, replies = worker.service, worker.feed, worker.replies
    old_id = service.config.group("a")[0].id
    await publish(feed, text_of("z"))
    await until(lambda: service.config.model_names == ["z"])
    assert await run(service, replies, old_id) is FrameKind.DONE
    assert await run(service, replies, "nobody#0000000000") is FrameKind.ERROR


async def test_a_revision_this_host_cannot_resolve_keeps_the_config(
    worker: Worker, caplog: pytest.LogCaptureFixture,
) -> None:
    service, feed = worker.service, worker.feed
    with caplog.at_level(logging.ERROR, logger="aigw.worker"):
        await publish(feed, text_of("a", "b", reply="os.environ/ONLY_ELSEWHERE"))
        await until(lambda: any("ONLY_ELSEWHERE is not set" in r.getMessage()
                                for r in caplog.records))
    assert service.config.model_names == ["a"]


async def test_a_changed_deployment_gets_a_fresh_adapter(worker: Worker) -> None:
    service, feed = worker.service, worker.feed
    adapter = service._provider
    await publish(feed, text_of("a", reply="changed"))
    await until(lambda: service.config.group("a")[0].extra.get("mock_response") == "changed")
    assert service._provider is not adapter


async def test_a_read_answered_before_the_watch_moved_on_does_not_roll_the_config_back(
    worker: Worker,
) -> None:
    service, feed, follower = worker.service, worker.feed, worker.follower
    older = await publish(feed, text_of("a", "b"))
    await until(lambda: service.config.model_names == ["a", "b"])
    _, stale = await feed.latest()  # what a refresh() read at this moment returns
    assert stale is not None
    await publish(feed, text_of("a", "b", "c"))
    await until(lambda: service.config.model_names == ["a", "b", "c"])
    follower.apply(Revision(older, stale))  # ...applied only now
    assert service.config.model_names == ["a", "b", "c"]


async def test_a_watch_that_starts_again_at_a_lower_revision_is_followed(
    worker: Worker,
) -> None:
    """The KV made anew (a NATS store lost) numbers its revisions from 1 again."""
    service, follower = worker.service, worker.follower
    follower._on_watch(Revision(40, ConfigDocument.of(text_of("a", "b"), "test:/c.yaml", 1.0)))
    assert service.config.model_names == ["a", "b"]
    follower._on_watch(Revision(1, ConfigDocument.of(text_of("a", "z"), "test:/c.yaml", 2.0)))
    assert service.config.model_names == ["a", "z"]
    follower.apply(Revision(0, ConfigDocument.of(text_of("old"), "test:/c.yaml", 0.5)))
    assert service.config.model_names == ["a", "z"]  # a stale read still is not applied
