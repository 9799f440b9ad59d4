"""The gateway on a three-node NATS cluster that loses nodes under load.

Three ``nats-server`` processes from the wheel form a JetStream cluster on loopback; the
gateway runs as separate processes (``aigw ingress``, a worker per provider, ``aigw
accounting``) with ``AIGW_JS_REPLICAS=3``, so every stream and bucket has a copy on each
node. Under load (streamed and non-streamed calls on 16 connections, and a 300-item batch)
the node leading the usage stream is SIGKILLed, started again once the stream has a new
leader, and then another node is killed and restarted. Then:

- at least 99 % of the calls succeed, and every failure is a clean OpenAI-shaped error;
- every upstream call has exactly one usage event in ClickHouse (an answered call one
  ``ok`` event), none twice;
- the batch completes, each ``custom_id`` once in its output.

A second test kills one of two workers of a provider under load on the same cluster.
The figures (success rate, time to recover, events) are written to ``cluster-figures.json``
in the test's directory and printed (``pytest -s``).
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas import subjects
from schemas.keys import KEYS_BUCKET, TEAMS_BUCKET
from tests.e2e.cluster_load import (
    BATCH_ITEMS,
    CONNECTIONS,
    Load,
    _batch_output,
    _calls_per_nonce,
    _figures,
    _gateway,
    _make_key,
    _settled_rows,
    _submit_batch,
    _upstream_calls,
)
from tests.fakes import openai_server
from tests.nats_cluster import NatsCluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path_factory.mktemp("cluster"))
    nodes.start()
    yield nodes
    nodes.stop()


# ---- the tests -------------------------------------------------------------------------------


def test_the_gateway_survives_losing_nats_nodes_one_after_another(
    cluster: NatsCluster, fake_openai: tuple[str, openai_server.FakeOpenAIState],
    fake_anthropic: tuple[str, object], fake_gemini: tuple[str, object], tmp_path: Path,
) -> None:
    gateway = _gateway(cluster, tmp_path, fake_openai[0], fake_anthropic[0], fake_gemini[0],
                       {"openai": 1, "anthropic": 1, "gemini": 1})
    try:
        for stream in (subjects.USAGE_STREAM, subjects.BATCH_STREAM, f"KV_{KEYS_BUCKET}",
                       f"KV_{TEAMS_BUCKET}", f"KV_{subjects.BATCH_BUCKET}",
                       f"OBJ_{subjects.FILES_OBJECTS}"):
            assert cluster.replicas(stream) == 3, stream
        key_id, secret = _make_key(gateway, "cluster-load")
        marker = f"cluster-{uuid.uuid4().hex[:8]}"
        batch_id = _submit_batch(gateway, secret, marker)
        load = Load(gateway.base_url, secret, marker).start()
        time.sleep(4)

        first = cluster.leader(subjects.USAGE_STREAM)
        killed_first = time.monotonic()
        cluster.kill(first)
        new_leader = cluster.leader(subjects.USAGE_STREAM)
        elected = time.monotonic() - killed_first
        assert new_leader != first
        time.sleep(5)
        cluster.restart(first)
        cluster.current(subjects.USAGE_STREAM, timeout=60)
        time.sleep(2)

        second = next(n for n in cluster.names if n not in (first,))
        second = new_leader if new_leader != first else second
        killed_second = time.monotonic()
        cluster.kill(second)
        time.sleep(5)
        cluster.restart(second)
        cluster.current(subjects.USAGE_STREAM, timeout=60)
        time.sleep(3)
        load.stop()

        outcomes = load.outcomes
        failed = [o for o in outcomes if not o.ok]
        unclean = [o.problem for o in failed if o.problem is not None]
        assert unclean == [], unclean[:5]
        success = 1 - len(failed) / len(outcomes)

        batch, output, errors = _batch_output(gateway, secret, batch_id)
        assert batch.status == "completed", batch
        ids = Counter(line["custom_id"] for line in output)
        assert errors == [], errors[:3]
        assert ids == Counter({f"item-{i}": 1 for i in range(BATCH_ITEMS)})

        answered = [o.request_id for o in outcomes if o.ok]
        calls = _upstream_calls(fake_openai[1], marker)
        rows = _settled_rows(gateway, key_id, at_least=len(answered) + BATCH_ITEMS)
        events = Counter(r["event_id"] for r in rows)
        assert [e for e, n in events.items() if n > 1] == []
        ok_events = Counter(r["request_id"] for r in rows if r["status"] == "ok")
        # An answered call has an ok event, and one event per upstream call it made: one,
        # unless an attempt's worker was lost (its event an estimate) or its heartbeat was
        # lost while its worker did call the upstream and the attempt was sent again.
        per_request = Counter(r["request_id"] for r in rows)
        per_nonce = _calls_per_nonce(fake_openai[1], marker)
        answered_calls = [(o.request_id, per_nonce[o.nonce]) for o in outcomes if o.ok]
        assert all(ok_events[rid] >= 1 and per_request[rid] == calls
                   for rid, calls in answered_calls), [
            (rid, ok_events[rid], per_request[rid], calls) for rid, calls in answered_calls
            if not ok_events[rid] >= 1 or per_request[rid] != calls][:5]
        not_ok = [(r["event_id"], r["status"], r.get("error_type"), r.get("status_code"))
                  for r in rows if r["status"] != "ok"]
        assert len(rows) == calls, (len(rows), calls, not_ok[:10],
                                    [(o.request_id, o.problem) for o in failed][:10])
        _figures(tmp_path, "nats_nodes_killed", {
            "calls": len(outcomes), "failed": len(failed), "success_rate": round(success, 5),
            "leader_elected_s": round(elected, 2),
            "recovered_after_first_kill_s": round(load.recovered_after(killed_first), 2),
            "recovered_after_second_kill_s": round(load.recovered_after(killed_second), 2),
            "usage_events": len(rows), "upstream_calls": calls,
            "batch_items": len(output), "killed": [first, second],
            "failures": Counter(f"{'stream' if o.stream else 'plain'} {o.code}"
                                for o in failed)})
        assert success >= 0.99, (len(failed), len(outcomes), failed[:3])
    except BaseException:
        print(gateway.all_logs())  # noqa: T201 - the processes' side of a failure
        raise
    finally:
        gateway.stop()
        for name in cluster.names:  # a failed test may leave a node down
            process = cluster.nodes[name].process
            if process is None or process.poll() is not None:
                cluster.restart(name)


def test_a_worker_killed_under_load_ends_its_calls_cleanly_and_the_other_carries_on(
    cluster: NatsCluster, fake_openai: tuple[str, openai_server.FakeOpenAIState],
    tmp_path: Path,
) -> None:
    gateway = _gateway(cluster, tmp_path, fake_openai[0], "", "", {"openai": 2})
    try:
        key_id, secret = _make_key(gateway, "cluster-worker-kill")
        marker = f"worker-kill-{uuid.uuid4().hex[:8]}"
        load = Load(gateway.base_url, secret, marker).start()
        time.sleep(3)
        victim = gateway.workers[0][1]
        killed = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        time.sleep(6)
        load.stop()

        outcomes = load.outcomes
        failed = [o for o in outcomes if not o.ok]
        assert [o.problem for o in failed if o.problem is not None] == []
        # Only calls in flight on the killed worker may fail: at most one per connection.
        assert len(failed) <= CONNECTIONS, len(failed)
        assert all(o.started < killed + 0.5 for o in failed), [
            (round(o.started - killed, 2), round(o.ended - killed, 2), o.stream, o.code)
            for o in failed]
        after = [o for o in outcomes if o.started > killed + 3]
        assert after and all(o.ok for o in after)

        answered = [o.request_id for o in outcomes if o.ok]
        rows = _settled_rows(gateway, key_id, at_least=len(answered))
        assert [e for e, n in Counter(r["event_id"] for r in rows).items() if n > 1] == []
        ok_events = Counter(r["request_id"] for r in rows if r["status"] == "ok")
        assert all(ok_events[rid] == 1 for rid in answered)
        _figures(tmp_path, "worker_killed", {
            "calls": len(outcomes), "failed": len(failed),
            "success_rate": round(1 - len(failed) / len(outcomes), 5),
            "recovered_after_s": round(load.recovered_after(killed), 2),
            "failures": Counter(f"{'stream' if o.stream else 'plain'} {o.code}"
                                for o in failed),
            "usage_events": len(rows),
            "upstream_calls": _upstream_calls(fake_openai[1], marker)})
    except BaseException:
        print(gateway.all_logs())  # noqa: T201 - the processes' side of a failure
        raise
    finally:
        gateway.stop()
