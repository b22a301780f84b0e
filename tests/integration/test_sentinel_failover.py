"""Redis failover under load: a primary, two replicas and a sentinel on loopback ports.

1. The real processes (ingest, emergency and routine workers) run with a ``redis+sentinel://``
   URL. The primary is SIGKILLed mid-load; the sentinel promotes a replica. Every event the
   producer had *acknowledged* (``min_replicas=1``: a replica held it) must then sit in exactly
   the right inboxes, once each; only invalid input may be dead-lettered; every process must
   carry on by itself and still stop on SIGTERM.
2. In-process ingest and RQ workers, real Redis and Sentinel: the replicas stop replicating
   before the primary takes a round of writes at every hop and is killed, so those writes are
   lost. The pipeline must redo each of them once; an event acknowledged without WAIT is lost
   (the window `--min-replicas` closes); one refused by WAIT is republished or spooled.
3. A switchover (SENTINEL FAILOVER): the old primary, now a replica, refuses a pinned client's
   writes (READONLY); Sentinel-managed clients, and the ingest worker built on one, move on.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import ReadOnlyError, RedisError, ResponseError

from city.config import CityConfig, load_city
from city.events import Event
from city.routing import Router
from jobs.context import RouteContext
from queues.connect import PRODUCER_SETTINGS, redis_from_url
from queues.keys import Keys
from queues.spool import Spool
from queues.streams import NotReplicatedError, Producer
from tests.conftest import require_redis_server, write_city
from tests.integration.acknowledged_load import (
    LoadProducer,
    LoggedProcesses,
    assert_delivered_once_each,
    inbox_contents,
    load_through,
    settled,
    wait_until,
    wait_until_delivered,
)
from tests.integration.test_processes import random_event
from workers.ingest import IngestWorker
from workers.standins import LocalRedisServer, LocalSentinel, sentinel_url
from workers.worker import build_worker

pytestmark = pytest.mark.integration

SERVICE = "mymaster"


@dataclass
class Cluster:
    primary: LocalRedisServer
    replicas: list[LocalRedisServer]
    sentinel: LocalSentinel
    url: str
    servers: list[LocalRedisServer] = field(default_factory=list)

    def master_port(self) -> int | None:
        found = self.sentinel.master()
        return found[1] if found else None

    def in_sync(self, server: LocalRedisServer, replicas: int) -> bool:
        """A write on `server` is confirmed by `replicas` replicas (initial sync done)."""
        try:
            client = server.client(socket_timeout=2)
            client.set("failover-test:probe", time.time())
            return int(client.wait(replicas, 200)) >= replicas
        except (RedisError, OSError):
            return False


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_redis_server("this test runs a primary, replicas and a sentinel of its own")
    primary = LocalRedisServer(directory=tmp_path / "primary").start()
    replicas = [
        LocalRedisServer(directory=tmp_path / f"replica{i}", replicaof=("127.0.0.1", primary.port))
        for i in range(2)
    ]
    for replica in replicas:
        replica.start()
    sentinel = LocalSentinel(primary.port, SERVICE, directory=tmp_path / "sentinel")
    sentinel.start()
    cluster = Cluster(primary, replicas, sentinel, sentinel_url([sentinel], SERVICE))
    cluster.servers = [primary, *replicas]
    try:
        wait_until(lambda: cluster.in_sync(primary, 2), "replicas in sync")
        wait_until(lambda: sentinel.replicas_known() == 2, "sentinel knows both replicas")
        yield cluster
    finally:
        sentinel.stop()
        for server in cluster.servers:
            if server.pid is not None:
                os.kill(server.pid, signal.SIGCONT)  # in case a test left one frozen
            server.stop(kill=True)


def failed_over(cluster: Cluster) -> LocalRedisServer:
    """Wait for the sentinel to promote a replica and for the other one to follow it."""
    old = cluster.primary.port
    wait_until(lambda: cluster.master_port() not in (None, old), "sentinel promoted a replica")
    new = next(r for r in cluster.replicas if r.port == cluster.master_port())
    wait_until(lambda: cluster.in_sync(new, 1), "the other replica follows the new master", 30)
    return new


# -- 1: the real processes through a failover ---------------------------------------------------
def test_failover_under_load_loses_no_acknowledged_event_and_doubles_none(
    cluster: Cluster, keys: Keys, seattle_router, tmp_path: Path
) -> None:
    departments = seattle_router.config.department_ids
    config = write_city(tmp_path, claim_idle_ms=1000)
    processes = LoggedProcesses(cluster.url, keys.prefix, config, tmp_path)
    load = LoadProducer(cluster.url, keys, seattle_router)
    try:
        processes.start("ingest", "ingest")
        processes.start("emergency", "worker", "--role", "emergency", "--name", f"{keys.prefix}-em")
        processes.start("routine", "worker", "--role", "routine", "--name", f"{keys.prefix}-rt")
        redis = redis_from_url(cluster.url)
        new_master: list[LocalRedisServer] = []

        def failover() -> None:
            cluster.primary.stop(kill=True)  # SIGKILL mid-load
            cluster.servers.remove(cluster.primary)
            new_master.append(failed_over(cluster))

        load_through(load, redis, departments, failover)
        assert redis.connection_pool.get_master_address()[1] == new_master[0].port  # type: ignore[attr-defined]
        # usually seconds; a route job whose dequeue survived the failover but whose delivery
        # did not waits for RQ's abandoned-job recovery (heartbeat ~90 s + 60 s)
        wait_until_delivered(redis, departments, load, processes, timeout=180)
        for name in ("ingest", "emergency", "routine"):  # each survived the failover by itself
            assert processes.running[name].poll() is None, f"{name} exited:\n{processes.output()}"
    finally:
        load.stop.set()
        processes.stop_all()
    assert not processes.hung, f"ignored SIGTERM: {processes.hung}\n{processes.output()}"
    assert_delivered_once_each(redis, departments, load)
    assert load.refused, "the failover never interrupted the producer: nothing was tested"


# -- 2: each hop's writes lost in a failover are redone, not doubled ------------------------------
def detach(servers: list[LocalRedisServer]) -> None:
    """Cut the replication link: the replicas keep what they have and receive nothing more.

    (Freezing them with SIGSTOP does not do it: the primary's stream waits in their socket
    buffers and arrives when they resume, so nothing would be lost.) The sentinel still lists
    them as replicas and promotes one when the primary dies.
    """
    for server in servers:
        server.client().replicaof("NO", "ONE")


def replicated(client: Redis, replicas: int) -> bool:
    """Every write so far has reached `replicas` replicas (a write, then WAIT, one connection)."""
    pipe = client.pipeline(transaction=False)
    pipe.set("failover-test:probe", time.time())
    pipe.wait(replicas, 5000)
    return int(pipe.execute()[-1]) >= replicas


def test_writes_lost_in_a_failover_are_redone_at_every_hop_and_doubled_nowhere(
    cluster: Cluster, keys: Keys, seattle_router: Router, tmp_path: Path
) -> None:
    """The replicas stop replicating while the primary takes writes, then the primary is
    killed: everything it did meanwhile is lost, as with a replication lag. Each kind of lost
    write must be redone by the pipeline itself, once."""
    config, _ = load_city(write_city(tmp_path, claim_idle_ms=200))
    departments = config.department_ids
    redis = redis_from_url(cluster.url)  # the processes' client, kept across the failover
    fast = redis_from_url(cluster.url, **PRODUCER_SETTINGS)  # the producers' client
    context = RouteContext(config=config, router=seattle_router, keys=keys)
    ingest = IngestWorker(redis, keys, config)
    rng = random.Random(11)
    expected: dict[str, set[str]] = {}

    def events(count: int) -> dict[str, list[Event]]:
        by_dept: dict[str, list[Event]] = {}
        for _ in range(count):
            dept, event = random_event(rng, len(expected))
            expected[event.id] = {
                d.dept for d in seattle_router.route(event.to_wire() | {"department": dept})
            }
            by_dept.setdefault(dept, []).append(event)
        return by_dept

    def ids(batch: dict[str, list[Event]]) -> set[str]:
        return {event.id for group in batch.values() for event in group}

    def publish(batch: dict[str, list[Event]], **durable: Any) -> None:
        for dept, group in batch.items():
            Producer(fast, dept, keys, **durable).publish_many(group)  # type: ignore[arg-type]

    def route_all() -> None:
        for role in ("emergency", "routine"):
            build_worker(redis, keys, role, context).work(burst=True)

    durable = {"min_replicas": 1, "replica_timeout_ms": 200}
    # before the cut, replicated: V read by ingest but not handled, W only published,
    # X handed to RQ but not routed
    v, w, x = events(20), events(20), events(20)
    publish(x, **durable)
    ingest.step(None)
    publish(v, **durable)
    read_v = ingest.streams.read(ingest.consumer, 100, None)
    publish(w, **durable)
    assert ids_in_entries(read_v) == ids(v) and replicated(redis, 2)

    detach(cluster.replicas)
    # everything from here to the kill is lost
    ingest.process(read_v)  # V: enqueued and acknowledged on the primary only
    ingest.step(None)  # W: read, enqueued, acknowledged on the primary only
    route_all()  # X, V, W: delivered on the primary only
    assert set(inbox_contents(redis, keys, departments)) >= {e for e in ids(x) if expected[e]}
    y = events(20)
    publish(y)  # Y: acknowledged without WAIT: lost, although the producer was told "ok"
    z = events(20)
    with pytest.raises(NotReplicatedError):
        publish(z, **durable)  # Z: refused, so its producer still holds it
    s = events(20)
    spool = Spool(tmp_path / "spool.db")
    for dept, group in s.items():  # S: refused by WAIT, kept in the spool
        Producer(fast, dept, keys, spool=spool, **durable).publish_many(group)  # type: ignore[arg-type]
    assert ids_in_spool(spool) == ids(s)
    cluster.primary.stop(kill=True)
    cluster.servers.remove(cluster.primary)
    failed_over(cluster)
    assert not inbox_contents(redis, keys, departments)  # every delivery above was lost

    deadline = time.monotonic() + 30  # a deadline, not 50 tries: settling takes what it takes
    while True:  # the producer's retry, same ids: its first try may meet a connection the
        try:  # failover closed, or sentinels still settling
            publish(z, **durable)
            break
        except (NotReplicatedError, RedisError):
            assert time.monotonic() < deadline, "Z was never acknowledged after the failover"
            time.sleep(0.1)
    spool.replay(redis, min_replicas=1)  # the flusher's replay, durable too
    spool.close()

    def settle() -> bool:
        ingest.recover()  # V: still pending for our consumer -> reclaimed and handled again
        while ingest.step(None):  # W: unread again; Z, S: new
            pass
        route_all()  # X: its job is back in the queue
        return settled(redis, keys, departments)

    wait_until(settle, "the pipeline redid what was lost", timeout=30)
    received = inbox_contents(redis, keys, departments)
    delivered = {eid: depts for eid, depts in expected.items() if depts}
    should_arrive = {eid for eid in delivered if eid not in ids(y)}
    assert {eid: sorted(received.get(eid, [])) for eid in should_arrive} == {
        eid: sorted(delivered[eid]) for eid in should_arrive
    }  # every one once, to exactly the right inboxes
    assert not ids(y) & set(received), "Y should be lost: the window --min-replicas closes"
    assert redis.xlen(keys.deadletter) == 0


def ids_in_entries(entries: list[Any]) -> set[str]:
    return {json.loads(entry.body)["id"] for entry in entries}


def ids_in_spool(spool: Spool) -> set[str]:
    return {str(entry.event_id) for entry in spool.pending()}


# -- 3: a client still talking to the old primary -------------------------------------------------
def test_after_a_switchover_the_old_primary_refuses_writes_and_sentinel_clients_move_on(
    cluster: Cluster, keys: Keys, seattle: tuple[CityConfig, Path]
) -> None:
    config, _ = seattle
    plain = cluster.primary.client()  # pinned to one server, as a redis:// URL would be
    managed = redis_from_url(cluster.url)
    ingest = IngestWorker(managed, keys, config)
    assert managed.ping() and plain.ping()  # both hold a connection to the primary now

    def switch_over() -> bool:  # refused (NOGOODSLAVE) until the sentinel has fresh replica info
        try:
            return bool(cluster.sentinel.client().execute_command("SENTINEL FAILOVER", SERVICE))
        except ResponseError as exc:
            if "NOGOODSLAVE" not in str(exc):
                raise
            return False

    wait_until(switch_over, "sentinel accepted the switchover")
    wait_until(lambda: plain.info("replication")["role"] == "slave", "old primary demoted")
    new_master = failed_over(cluster)
    with pytest.raises(ReadOnlyError):
        plain.xadd(keys.ingest("sdot"), {"e": b"{}"})
    dept, event = random_event(random.Random(3), 0)
    Producer(managed, dept, keys).publish(event)  # the same client object: now the new master
    assert new_master.client().xlen(keys.ingest(dept)) == 1
    assert ingest.step(None)["accepted"] == 1  # built before the switchover, carries on
