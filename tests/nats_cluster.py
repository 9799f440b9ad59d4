"""Three ``nats-server`` processes from the wheel, clustered on loopback with JetStream.

Each node has its own client port, route port and store; a node killed and started again
comes back on the same ports with its store, and catches up with the others.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import nats.errors
import nats.js.errors

from cli.nats_server import NatsServer
from tests.fakes.server import free_port


def _node_config(name: str, route_port: int, routes: list[int]) -> str:
    peers = ", ".join(f"nats-route://127.0.0.1:{port}" for port in routes)
    return (f"server_name: {name}\n"
            f"cluster {{\n  name: aigw-test\n  listen: 127.0.0.1:{route_port}\n"
            f"  routes: [{peers}]\n}}\n")


class NatsCluster:
    def __init__(self, root: Path, size: int = 3) -> None:
        route_ports = [free_port() for _ in range(size)]
        self.names = [f"n{i + 1}" for i in range(size)]
        self.nodes = {
            name: NatsServer(root / name, port=free_port(),
                             extra_config=_node_config(name, route_ports[i], route_ports))
            for i, name in enumerate(self.names)
        }

    @property
    def url(self) -> str:
        """Every node, comma-separated, as ``NATS_URL`` takes a cluster."""
        return ",".join(node.url for node in self.nodes.values())

    @property
    def servers(self) -> list[str]:
        return [node.url for node in self.nodes.values()]

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes.values():
            node.start()
        asyncio.run(self._meta_leader(timeout))

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def kill(self, name: str) -> None:
        self.nodes[name].kill()

    def restart(self, name: str) -> None:
        self.nodes[name].start()

    async def _meta_leader(self, timeout: float) -> None:
        """Until JetStream answers: the nodes elected a meta leader."""
        deadline = time.monotonic() + timeout
        nc = await nats.connect(self.servers, max_reconnect_attempts=-1)
        try:
            while True:
                try:
                    await nc.jetstream().account_info()
                    return
                except (nats.errors.Error, nats.js.errors.Error):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    def leader(self, stream: str, timeout: float = 30.0) -> str:
        """The node that leads ``stream`` now (waits while it is electing one)."""
        return asyncio.run(self._leader(stream, timeout))

    async def _leader(self, stream: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        nc = await nats.connect(self.servers, max_reconnect_attempts=-1)
        try:
            while True:
                try:
                    info = await nc.jetstream().stream_info(stream)
                    if info.cluster is not None and info.cluster.leader:
                        return info.cluster.leader
                except (nats.errors.Error, nats.js.errors.Error):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"stream {stream} has no leader after {timeout}s")
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    def replicas(self, stream: str) -> int:
        async def read() -> int:
            nc = await nats.connect(self.servers)
            try:
                info = await nc.jetstream().stream_info(stream)
                return info.config.num_replicas or 1
            finally:
                await nc.close()

        return asyncio.run(read())

    def current(self, stream: str, timeout: float = 30.0) -> None:
        """Until every replica of ``stream`` is current again (a restarted node caught up)."""
        async def wait() -> None:
            deadline = time.monotonic() + timeout
            nc = await nats.connect(self.servers, max_reconnect_attempts=-1)
            try:
                while True:
                    try:
                        info = await nc.jetstream().stream_info(stream)
                        cluster = info.cluster
                        if (cluster is not None and cluster.leader and cluster.replicas
                                and len(cluster.replicas) == len(self.nodes) - 1
                                and all(r.current for r in cluster.replicas)):
                            return
                    except (nats.errors.Error, nats.js.errors.Error):
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"stream {stream} not current after {timeout}s")
                    await asyncio.sleep(0.2)
            finally:
                await nc.close()

        asyncio.run(wait())
