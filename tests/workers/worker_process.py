"""A real ``aigw worker`` process on a test's own nats-server, fed as an ingress feeds it.

Attempts are published on its subject with a reply inbox; batch items go on the work queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from core.batch_store import ensure
from schemas import subjects
from schemas.batch import Batch, BatchItem, BatchRecord, BatchStatus, item_msg_id
from schemas.config import GatewayConfig, parse_config
from schemas.frames import KIND_HEADER, DoneFrame, ErrorFrame, FrameKind
from schemas.infer import Endpoint, InferRequest
from tests.harness import Gateway, write_config


@contextmanager
def worker_process(nats_url: str, raw_config: dict[str, Any], work: Path, provider: str,
                   env: Mapping[str, str]) -> Iterator[tuple[Gateway, GatewayConfig]]:
    """One worker for ``provider`` serving ``raw_config``; the config as it parsed it."""
    config_path = write_config(work / "config.yaml", raw_config)
    # No ingress runs here to admit batch items (tests/e2e/test_batch_admission.py covers
    # that); the worker runs them unasked unless a test turns admission on.
    env = {"AIGW_BATCH_ADMISSION": "false", **env}
    gateway = Gateway(nats_url=nats_url, config_path=config_path, log_dir=work, env=env)
    gateway.start_worker(provider)
    try:
        yield gateway, parse_config(raw_config, env)
    finally:
        gateway.stop()


async def until_serving(nc: Client, gateway: Gateway, provider: str,
                        timeout: float = 30.0) -> None:
    """Wait until a worker answers ``provider``'s ping (it is subscribed)."""
    deadline = time.monotonic() + timeout
    while True:
        for _, proc in gateway.workers:
            assert proc.poll() is None, f"worker exited:\n{gateway.all_logs()}"
        try:
            await nc.request(subjects.ping(provider), b"", timeout=0.5)
            return
        except (NoRespondersError, NatsTimeout):
            assert time.monotonic() < deadline, f"no worker answered:\n{gateway.all_logs()}"
            await asyncio.sleep(0.05)


def request_for(config: GatewayConfig, alias: str, *, stream: bool = False,
                endpoint: Endpoint = Endpoint.CHAT, attempt: int = 0,
                request_id: str = "req-1", batch_id: str | None = None) -> InferRequest:
    deployment = next(d for d in config.deployments if d.model_name == alias)
    body: dict[str, Any] = (
        {"input": ["one two three"]} if endpoint is Endpoint.EMBEDDINGS
        else {"messages": [{"role": "user", "content": "Say hello to the tests"}]})
    return InferRequest(request_id=request_id, attempt=attempt, endpoint=endpoint,
                        deployment_id=deployment.id, model_alias=alias, body=body,
                        stream=stream, batch_id=batch_id)


async def send_attempt(nc: Client, provider: str, request: InferRequest,
                       headers: dict[str, str] | None = None,
                       timeout: float = 10.0) -> DoneFrame | ErrorFrame:
    """Publish one attempt as the ingress does; its last frame."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(subjects.infer(provider), request.model_dump_json().encode(),
                         reply=inbox, headers=headers)
        while True:
            msg = await sub.next_msg(timeout)
            kind = (msg.headers or {}).get(KIND_HEADER)
            if kind == FrameKind.DONE.value:
                return DoneFrame.model_validate_json(msg.data)
            if kind == FrameKind.ERROR.value:
                return ErrorFrame.model_validate_json(msg.data)
    finally:
        await sub.unsubscribe()


async def run_batch_item(nc: Client, provider: str, item: BatchItem) -> None:
    """Put ``item`` of a batch in progress on the work queue, as batch creation does."""
    js = nc.jetstream()
    buckets = await ensure(js)
    batch = Batch(id=item.batch_id, endpoint="/v1/chat/completions", input_file_id="file-1",
                  status=BatchStatus.IN_PROGRESS, created_at=int(time.time()))
    await buckets.batches.put(item.batch_id, BatchRecord(batch=batch).model_dump_json().encode())
    await js.publish(subjects.batch_items(provider, item.batch_id),
                     item.model_dump_json().encode(),
                     headers={"Nats-Msg-Id": item_msg_id(item.batch_id, item.line)})


async def get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url, headers=headers)
