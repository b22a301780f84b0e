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
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
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
from queues.priority import BULK, EMERGENCY, HIGH, ROUTINE, make_queue
from queues.spool import Spool
from queues.streams import LANES, NotReplicatedError, Producer
from tests.conftest import ROOT, require_redis_server, write_city
from tests.integration.test_processes import WEST, Processes, random_event
from workers.ingest import IngestWorker
from workers.standins import LocalRedisServer, LocalSentinel, sentinel_url
from workers.worker import build_worker

pytestmark = pytest.mark.integration

SERVICE = "mymaster"


def wait_until(check: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


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
@dataclass
class LoadProducer:
    """Publishes batches until stopped, retrying each batch (same event ids) until it is
    acknowledged; records what was acknowledged and what each event should reach."""

    url: str
    keys: Keys
    router: Router
    acknowledged: dict[str, set[str]] = field(default_factory=dict)
    invalid: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)  # typed errors seen while failing over
    batches: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def expected(self, dept: str, event: Event) -> set[str]:
        return {d.dept for d in self.router.route(event.to_wire() | {"department": dept})}

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # re-raised by the test thread
            self.error = exc

    def _run(self) -> None:
        client = redis_from_url(self.url, **PRODUCER_SETTINGS)
        producers: dict[str, Producer] = {}
        rng = random.Random(8)
        n = 0
        while not self.stop.is_set():
            batch: dict[str, list[Event | dict]] = {}
            expected: dict[str, set[str]] = {}
            for _ in range(40):
                dept, event = random_event(rng, n)
                n += 1
                batch.setdefault(dept, []).append(event)
                expected[event.id] = self.expected(dept, event)
            bad_id = f"bad-{n}"
            batch.setdefault("sdot", []).append(
                {"id": bad_id, "type": "traffic.incident", "data": {}, "location": WEST}
            )
            for dept, events in batch.items():
                producer = producers.setdefault(
                    dept,
                    Producer(client, dept, self.keys, min_replicas=1, replica_timeout_ms=300),
                )
                while True:  # a producer's retry: the same events (same ids) until acknowledged
                    try:
                        producer.publish_many(events)
                        break
                    except (NotReplicatedError, RedisError) as exc:
                        self.refused.append(type(exc).__name__)
                        time.sleep(0.1)
                for event in events:
                    if isinstance(event, Event):
                        self.acknowledged[event.id] = expected[event.id]
                    else:
                        self.invalid.add(str(event["id"]))
            self.batches += 1
            time.sleep(0.05)


class LoggedProcesses(Processes):
    """The real processes, each writing its output to a log file shown when the test fails."""

    def __init__(self, redis_url: str, prefix: str, config: Path, logs: Path):
        super().__init__(redis_url, prefix, config)
        self.env["PYTHONFAULTHANDLER"] = "1"
        self.hung: list[str] = []
        self.logs = logs

    def start(self, name: str, *args: str) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            self.running[name] = subprocess.Popen(
                self.base + list(args), env=self.env, cwd=ROOT, stdout=log, stderr=log
            )

    def stop_all(self) -> None:
        """SIGTERM each (a warm shutdown); one still running 20 s later gets SIGABRT (its
        threads' stacks go to its log: PYTHONFAULTHANDLER) and is recorded in `hung`."""
        for process in self.running.values():
            process.terminate()
        for name, process in self.running.items():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.hung.append(name)
                process.send_signal(signal.SIGABRT)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def output(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )


def inbox_contents(redis: Redis, keys: Keys, departments: list[str]) -> dict[str, list[str]]:
    received: dict[str, list[str]] = {}
    for dept in departments:
        for _, fields in redis.xrange(keys.inbox(dept)):
            received.setdefault(json.loads(fields[b"e"])["id"], []).append(dept)
    return received


def dead_letters(redis: Redis, keys: Keys) -> list[tuple[str, str]]:
    """(reason, event id) of every dead letter."""
    return [
        (fields[b"reason"].decode(), json.loads(fields[b"body"])["id"])
        for _, fields in redis.xrange(keys.deadletter)
    ]


def settled(redis: Redis, keys: Keys, departments: list[str]) -> bool:
    """No RQ job waiting and no ingest entry unread or read but unacknowledged."""
    if any(make_queue(redis, keys, q).count for q in (EMERGENCY, HIGH, ROUTINE, BULK)):
        return False
    for dept in departments:
        for lane in LANES:
            stream = keys.ingest(dept, lane)
            if not redis.exists(stream):
                continue
            (group,) = redis.xinfo_groups(stream)
            if group["pending"] or group["lag"]:  # read and unacknowledged, or not yet read
                return False
    return True


def diagnose(redis: Redis, keys: Keys, departments: list[str]) -> str:
    from rq.registry import StartedJobRegistry

    queues = {q: make_queue(redis, keys, q) for q in (EMERGENCY, HIGH, ROUTINE, BULK)}
    parts = [f"queued { {q: queue.count for q, queue in queues.items()} }"]
    parts.append(
        "started "
        + str({q: StartedJobRegistry(queue=queue).get_job_ids() for q, queue in queues.items()})
    )
    parts.append(
        "failed " + str({q: queue.failed_job_registry.get_job_ids() for q, queue in queues.items()})
    )
    parts.append(
        "scheduled "
        + str({q: queue.scheduled_job_registry.get_job_ids() for q, queue in queues.items()})
    )
    pending = {}
    for dept in departments:
        for lane in LANES:
            stream = keys.ingest(dept, lane)
            if redis.exists(stream):
                info = redis.xinfo_groups(stream)
                pending[stream] = [(g["pending"], g.get("lag")) for g in info]
    parts.append(f"ingest pending/lag { {k: v for k, v in pending.items() if v[0][0] or v[0][1]} }")
    return "; ".join(parts)


def test_failover_under_load_loses_no_acknowledged_event_and_doubles_none(
    cluster: Cluster, keys: Keys, seattle_router, tmp_path: Path
) -> None:
    departments = seattle_router.config.department_ids
    config = write_city(tmp_path, claim_idle_ms=1000)
    processes = LoggedProcesses(cluster.url, keys.prefix, config, tmp_path)
    load = LoadProducer(cluster.url, keys, seattle_router)
    thread = threading.Thread(target=load.run, name="load", daemon=True)
    try:
        processes.start("ingest", "ingest")
        processes.start("emergency", "worker", "--role", "emergency", "--name", f"{keys.prefix}-em")
        processes.start("routine", "worker", "--role", "routine", "--name", f"{keys.prefix}-rt")
        redis = redis_from_url(cluster.url)
        dept, probe = random_event(random.Random(1), 2)  # every process is up once it arrives
        load.acknowledged[probe.id] = load.expected(dept, probe)
        Producer(redis, dept, keys).publish(probe)
        wait_until(lambda: probe.id in inbox_contents(redis, keys, departments), "start", 90)
        thread.start()
        wait_until(lambda: load.batches >= 10, "load before the failover")
        cluster.primary.stop(kill=True)  # SIGKILL mid-load
        cluster.servers.remove(cluster.primary)
        new_master = failed_over(cluster)
        at_failover = load.batches
        wait_until(lambda: load.batches >= at_failover + 10, "load after the failover", 30)
        load.stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the producer's last batch was never acknowledged"
        assert load.error is None, f"producer failed: {load.error!r}"
        assert redis.connection_pool.get_master_address()[1] == new_master.port  # type: ignore[attr-defined]

        def everything_arrived() -> bool:
            received = inbox_contents(redis, keys, departments)
            return (
                all(depts <= set(received.get(e, [])) for e, depts in load.acknowledged.items())
                and load.invalid <= {eid for _, eid in dead_letters(redis, keys)}
                and settled(redis, keys, departments)
            )

        try:  # usually seconds; a route job whose dequeue survived the failover but whose
            # delivery did not waits for RQ's abandoned-job recovery (heartbeat ~90 s + 60 s)
            wait_until(everything_arrived, "every acknowledged event handled", timeout=180)
        except AssertionError:
            received = inbox_contents(redis, keys, departments)
            missing = {
                eid: depts - set(received.get(eid, []))
                for eid, depts in load.acknowledged.items()
                if depts - set(received.get(eid, []))
            }
            not_dead = load.invalid - {eid for _, eid in dead_letters(redis, keys)}
            raise AssertionError(
                f"{len(missing)} acknowledged events missing, e.g. {list(missing.items())[:3]};"
                f" {len(not_dead)} invalid ones not dead-lettered;"
                f" {diagnose(redis, keys, departments)}\n{processes.output()}"
            ) from None
        for name in ("ingest", "emergency", "routine"):  # each survived the failover by itself
            assert processes.running[name].poll() is None, f"{name} exited:\n{processes.output()}"
    finally:
        load.stop.set()
        processes.stop_all()
    assert not processes.hung, f"ignored SIGTERM: {processes.hung}\n{processes.output()}"
    received = inbox_contents(redis, keys, departments)
    twice = {eid: d for eid, d in received.items() if len(d) != len(set(d))}
    wrong = {eid: d for eid, d in received.items() if set(d) != load.acknowledged.get(eid)}
    assert not twice and not wrong
    dead = dead_letters(redis, keys)
    assert {reason for reason, _ in dead} == {"invalid_payload"}
    assert {eid for _, eid in dead} == load.invalid
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
