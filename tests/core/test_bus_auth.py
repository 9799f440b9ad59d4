"""NATS with our authorization block: no credentials, no connection; each role does its own
job and nothing else (a worker cannot write API keys, accounting cannot read prompts); TLS
with our own CA, and client certificates."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig

from cli.bus_config import EmbeddedCredentials, authorization
from cli.nats_server import NatsServer
from core.bus_auth import BusAuth
from core.bus_barrier import barrier
from schemas import subjects
from schemas.bus_roles import ACCOUNTING, INGRESS, ROLES, WORKER
from schemas.keys import KEYS_BUCKET
from tests.fakes.server import free_port

PASSWORDS = {role: f"test-{role}-password" for role in ROLES}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats-auth"),
                        extra_config=authorization(PASSWORDS))
    server.start()
    yield server
    server.stop()


class Errors:
    """What the server told a client asynchronously (permission violations)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, error: Exception) -> None:
        self.seen.append(str(error).lower())

    async def wait_for(self, text: str, within: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while not any(text.lower() in seen for seen in self.seen):
            assert asyncio.get_running_loop().time() < deadline, self.seen
            await asyncio.sleep(0.05)


async def connect(server: NatsServer, role: str, errors: Errors | None = None,
                  password: str | None = None) -> Client:
    auth = BusAuth(user=role, password=password or PASSWORDS[role])
    return await nats.connect(server.url, allow_reconnect=False,
                              error_cb=(errors or Errors()).record, **auth.connect_options(role))


@pytest.fixture
async def clients(secured: NatsServer) -> AsyncIterator[dict[str, tuple[Client, Errors]]]:
    made = {}
    for role in ROLES:
        errors = Errors()
        made[role] = (await connect(secured, role, errors), errors)
    yield made
    for client, _ in made.values():
        await client.close()


async def test_a_client_without_credentials_or_with_a_wrong_password_is_refused(
        secured: NatsServer) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(secured.url, allow_reconnect=False)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(secured, WORKER, password="not-the-password")


async def test_the_ingress_writes_keys_and_a_worker_may_not(
        clients: dict[str, tuple[Client, Errors]]) -> None:
    ingress, _ = clients[INGRESS]
    worker, worker_errors = clients[WORKER]
    keys = await ingress.jetstream().create_key_value(KeyValueConfig(bucket=KEYS_BUCKET))
    await keys.put("by-ingress", b"{}")
    forged = worker.jetstream(timeout=1.0)
    with pytest.raises(nats.errors.TimeoutError):
        await forged.publish(f"$KV.{KEYS_BUCKET}.forged", b"{}")
    await worker_errors.wait_for(f'permissions violation for publish to "$kv.{KEYS_BUCKET}.forged')
    with pytest.raises(nats.errors.TimeoutError):  # nor purge the bucket
        await forged.purge_stream(f"KV_{KEYS_BUCKET}")
    assert await keys.keys() == ["by-ingress"]


async def test_accounting_may_not_read_prompts_or_anyone_elses_replies(
        clients: dict[str, tuple[Client, Errors]]) -> None:
    accounting, errors = clients[ACCOUNTING]
    await accounting.subscribe(f"{subjects.PREFIX}.infer.>")
    await errors.wait_for(f'permissions violation for subscription to "{subjects.PREFIX}.infer.>')
    await accounting.subscribe("_INBOX.>")
    await errors.wait_for('permissions violation for subscription to "_inbox.>')
    worker, worker_errors = clients[WORKER]
    await worker.subscribe(f"{subjects.PREFIX}.analytics.*")
    await worker_errors.wait_for("permissions violation for subscription")


async def test_an_attempt_goes_from_ingress_to_worker_and_its_frames_come_back(
        clients: dict[str, tuple[Client, Errors]]) -> None:
    ingress, ingress_errors = clients[INGRESS]
    worker, worker_errors = clients[WORKER]

    async def answer(msg: Msg) -> None:
        for frame in (b"one", b"two", b"three"):  # a stream: several frames per attempt
            await worker.publish(msg.reply, frame)

    await worker.subscribe(subjects.infer("mock"), queue=subjects.worker_queue("mock"),
                           cb=answer)
    await barrier(worker)
    inbox = ingress.new_inbox()
    frames = await ingress.subscribe(f"{inbox}.*")
    await ingress.publish(subjects.infer("mock"), b"{}", reply=f"{inbox}.1")
    got = [(await frames.next_msg(timeout=5)).data for _ in range(3)]
    assert got == [b"one", b"two", b"three"]
    assert ingress_errors.seen == worker_errors.seen == []


async def test_accounting_answers_analytics_and_a_worker_may_not_ask(
        clients: dict[str, tuple[Client, Errors]]) -> None:
    accounting, accounting_errors = clients[ACCOUNTING]
    ingress, _ = clients[INGRESS]
    worker, worker_errors = clients[WORKER]

    async def answer(msg: Msg) -> None:
        await msg.respond(b"summary")

    await accounting.subscribe(subjects.ANALYTICS_ALL, cb=answer)
    await barrier(accounting)
    reply = await ingress.request(subjects.analytics("summary"), b"{}", timeout=5)
    assert reply.data == b"summary"
    with pytest.raises(nats.errors.TimeoutError):
        await worker.request(subjects.analytics("summary"), b"{}", timeout=1)
    await worker_errors.wait_for("permissions violation for publish")
    # Accounting answers what it is asked, and may not publish anything else to an ingress.
    await accounting.publish(f"{ingress.new_inbox()}.1", b"forged frame")
    await accounting_errors.wait_for("permissions violation for publish to \"_inbox.ingress.")


async def test_a_worker_runs_batch_items_and_usage_reaches_accounting(
        clients: dict[str, tuple[Client, Errors]]) -> None:
    """The JetStream side of each role: the ingress queues an item, the worker pulls it,
    writes its result and publishes usage; accounting pulls the usage event."""
    from core.batch_store import ensure
    from core.usage_stream import ensure_usage_stream

    ingress, ingress_errors = clients[INGRESS]
    worker, worker_errors = clients[WORKER]
    accounting, accounting_errors = clients[ACCOUNTING]
    buckets = await ensure(ingress.jetstream())
    await ingress.jetstream().publish(subjects.batch_items("mock", "b1"), b"item")
    worker_js = worker.jetstream()
    worker_buckets = await ensure(worker_js)
    pull = await worker_js.pull_subscribe(subjects.batch_provider_items("mock"),
                                          durable=subjects.batch_consumer("mock"),
                                          stream=subjects.BATCH_STREAM)
    [item] = await pull.fetch(1, timeout=5)
    await worker_buckets.results.create("b1.ok.1", b"result")
    await item.ack()
    await ensure_usage_stream(worker_js)
    await worker_js.publish(subjects.usage("mock"), b"event")
    assert (await buckets.results.get("b1.ok.1")).value == b"result"
    usage = accounting.jetstream()
    await ensure_usage_stream(usage)
    events = await usage.pull_subscribe(subjects.USAGE_SUBJECTS, durable="test-usage",
                                        stream=subjects.USAGE_STREAM)
    [event] = await events.fetch(1, timeout=5)
    assert event.data == b"event"
    await event.ack()
    with pytest.raises(nats.errors.TimeoutError):  # a worker writes no batch records
        await worker.jetstream(timeout=1.0).publish(f"$KV.{subjects.BATCH_BUCKET}.b1", b"x")
    assert ingress_errors.seen == accounting_errors.seen == []
    assert worker_errors.seen == [
        f'nats: permissions violation for publish to "$kv.{subjects.BATCH_BUCKET}.b1"']


def test_embedded_credentials_are_private_and_kept_across_restarts(tmp_path: Path) -> None:
    first = EmbeddedCredentials.load_or_create(tmp_path)
    path = tmp_path / "nats-credentials.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert set(first.passwords) == set(ROLES)
    assert len(set(first.passwords.values())) == len(ROLES)
    assert EmbeddedCredentials.load_or_create(tmp_path).passwords == first.passwords
    path.chmod(0o644)
    EmbeddedCredentials.load_or_create(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert first.env(WORKER)["AIGW_NATS_USER"] == "worker"
    assert first.auth(INGRESS).connect_options(INGRESS)["password"] == first.passwords[INGRESS]


def test_settings_come_from_the_environment_and_half_a_pair_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIGW_NATS_USER", "AIGW_NATS_PASSWORD", "AIGW_NATS_TLS_CA",
                 "AIGW_NATS_TLS_CERT", "AIGW_NATS_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert BusAuth().connect_options(WORKER) == {"inbox_prefix": "_INBOX.worker"}
    monkeypatch.setenv("AIGW_NATS_PASSWORD", "do-not-print-me")
    with pytest.raises(ValueError, match="AIGW_NATS_USER") as refused:
        BusAuth()
    assert "do-not-print-me" not in str(refused.value)
    monkeypatch.setenv("AIGW_NATS_USER", "worker")
    monkeypatch.setenv("AIGW_NATS_PASSWORD", "secret")
    assert BusAuth().connect_options(WORKER)["password"] == "secret"
    monkeypatch.setenv("AIGW_NATS_TLS_CERT", "/x.pem")
    with pytest.raises(ValueError, match="AIGW_NATS_TLS_KEY"):
        BusAuth()


# ---- TLS -------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA of our own, a server certificate for 127.0.0.1 and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
             "-days", "2", "-subj", "/CN=aigw test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        _openssl("req", "-new", *ec, "-keyout", str(d / f"{name}.key"),
                 "-out", str(d / f"{name}.csr"), "-subj", f"/CN=aigw test {name}")
        (d / f"{name}.ext").write_text(
            f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                 "-out", str(d / f"{name}.pem"), "-extfile", str(d / f"{name}.ext"))
    return d


def _tls_server(store: Path, pki: Path, verify_clients: bool) -> NatsServer:
    block = (f'tls {{\n  cert_file: "{pki / "server.pem"}"\n  key_file: "{pki / "server.key"}"\n'
             f'  ca_file: "{pki / "ca.pem"}"\n  verify: {str(verify_clients).lower()}\n}}\n')
    server = NatsServer(store, port=free_port(), extra_config=block + authorization(PASSWORDS))
    server.start()
    return server


async def test_a_tls_server_accepts_our_client_configured_with_its_ca(
        tmp_path: Path, pki: Path) -> None:
    server = _tls_server(tmp_path / "nats", pki, verify_clients=False)
    try:
        url = f"tls://127.0.0.1:{server.port}"
        auth = BusAuth(user=INGRESS, password=PASSWORDS[INGRESS], tls_ca=pki / "ca.pem")
        client = await nats.connect(url, allow_reconnect=False, **auth.connect_options(INGRESS))
        assert client.is_connected
        await client.close()
        # FastStream's broker (workers, accounting) takes the same settings.
        worker = BusAuth(user=WORKER, password=PASSWORDS[WORKER], tls_ca=pki / "ca.pem")
        broker = NatsBroker(url, allow_reconnect=False, **worker.broker_options(WORKER))
        connection = await broker.connect()
        assert connection.is_connected
        await broker.stop()
        # Without our CA the server's certificate is not trusted.
        with pytest.raises(ssl.SSLCertVerificationError):
            await nats.connect(url, allow_reconnect=False, user=INGRESS,
                               password=PASSWORDS[INGRESS])
    finally:
        server.stop()


async def test_a_server_that_verifies_clients_takes_our_client_certificate(
        tmp_path: Path, pki: Path) -> None:
    server = _tls_server(tmp_path / "nats", pki, verify_clients=True)
    try:
        url = f"tls://127.0.0.1:{server.port}"
        auth = BusAuth(user=WORKER, password=PASSWORDS[WORKER], tls_ca=pki / "ca.pem",
                       tls_cert=pki / "client.pem", tls_key=pki / "client.key")
        client = await nats.connect(url, allow_reconnect=False, **auth.connect_options(WORKER))
        assert client.is_connected
        await client.close()
        no_cert = BusAuth(user=WORKER, password=PASSWORDS[WORKER], tls_ca=pki / "ca.pem")
        with pytest.raises((ssl.SSLError, nats.errors.Error, OSError)):
            await nats.connect(url, allow_reconnect=False, connect_timeout=5,
                               **no_cert.connect_options(WORKER))
    finally:
        server.stop()
