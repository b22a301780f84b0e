"""``min_replicas`` on a Redis Cluster counts the replicas of the primary that took the events.

WAIT answers for the connection it is sent on. A cluster pipeline sent the XADDs to the
group's primary and WAIT (no key) to the client's default node, which answered for a
connection that had written nothing: events were acknowledged as replicated while their own
primary's replica held nothing (queues/replicas.py). Here each primary serves one group and one
replica is frozen (SIGSTOP): only the producers of that replica's group may be refused.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from pathlib import Path

import pytest

from city.events import Event, source_for
from queues.connect import PRODUCER_SETTINGS, redis_from_url
from queues.keys import Keys
from queues.spool import Spool
from queues.streams import NotReplicatedError, Producer
from tests.integration.acknowledged_load import wait_until
from workers.standin_cluster import LocalRedisCluster, tag_in_slot

pytestmark = pytest.mark.integration


def test_a_frozen_replica_refuses_the_events_of_its_own_primary_only(
    cluster: LocalRedisCluster,
) -> None:
    groups: dict[int, Keys] = {}  # primary's port -> a slot group it serves
    while len(groups) < len(cluster.primary_ports()):
        keys = Keys("{g" + uuid.uuid4().hex[:8] + "}")
        groups.setdefault(cluster.owner(keys.inbox("fire")), keys)
    for primary in groups:
        wait_until(lambda primary=primary: cluster.replicated(primary), "replicas online", 30)
    frozen_primary = sorted(groups)[0]
    frozen = cluster.replica_of(frozen_primary)
    client = redis_from_url(cluster.url, **PRODUCER_SETTINGS)
    refused: dict[int, list[str]] = {}
    os.kill(cluster.pid(frozen), signal.SIGSTOP)
    try:
        for primary, keys in groups.items():
            producer = Producer(client, "fire", keys, min_replicas=1, replica_timeout_ms=300)
            event = Event.new("safety.dispatch", source_for("fire"), {"nature": "aid"})
            for publish, arg in (
                (producer.publish_many, [event]),
                (producer.publish_raw, event.model_dump_json().encode()),
            ):
                try:
                    publish(arg)  # type: ignore[operator]
                except NotReplicatedError:
                    refused.setdefault(primary, []).append(publish.__name__)
    finally:
        os.kill(cluster.pid(frozen), signal.SIGCONT)
    assert refused == {frozen_primary: ["publish_many", "publish_raw"]}


def test_acknowledged_publishes_and_replays_wait_out_a_slot_migration(
    cluster: LocalRedisCluster, tmp_path: Path
) -> None:
    """The writes and WAIT go to the slot's primary on its node client, not through the
    cluster client that rides out migrations: while a slot is MIGRATING (set by hand, as
    ``redis-cli --cluster reshard`` does first), its source answers ASK for a stream it does
    not hold. A publish and a spool replay with ``min_replicas`` wait until the slot is handed
    over, then land on the new owner, acknowledged by its replica."""
    source, target = cluster.primary_ports()[:2]
    slots = [cluster.lowest_slot(source), cluster.lowest_slot(source) + 1]
    assert [cluster.slot_owner(slot) for slot in slots] == [source, source]
    publishing, replaying = (
        Keys("{" + tag_in_slot(slot, "m" + uuid.uuid4().hex[:6]) + "}") for slot in slots
    )  # both slots are empty: nothing else in this cluster uses them
    for primary in (source, target):
        wait_until(lambda primary=primary: cluster.replicated(primary), "replicas online", 30)
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    for slot in slots:
        with cluster.node(target) as node:
            node.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        with cluster.node(source) as node:
            node.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)

    def hand_over(slot: int) -> None:  # the end of a resharding: SETSLOT NODE everywhere
        others = [port for port in cluster.primary_ports() if port not in (source, target)]
        for port in (target, source, *others):
            with cluster.node(port) as node:
                node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    client = redis_from_url(cluster.url, **PRODUCER_SETTINGS)
    producer = Producer(client, "fire", publishing, min_replicas=1, replica_timeout_ms=1000)
    event = Event.new("safety.dispatch", source_for("fire"), {"nature": "aid"})
    published = producer.encode(event)[0]
    spool = Spool(tmp_path / "fire.db")
    spooled = replaying.ingest("fire", "routine")
    spool.append(spooled, {"e": event.model_dump_json()}, event_id=str(event.id))
    sends = [(lambda: producer.publish_many([event])), (lambda: spool.replay(client, 10, 1, 1000))]
    for slot, send in zip(slots, sends, strict=True):
        timer = threading.Timer(0.5, hand_over, args=(slot,))
        timer.start()
        try:
            assert send()  # the ids published; the number of entries replayed
        finally:
            timer.join()
    assert [cluster.owner(stream) for stream in (published, spooled)] == [target, target]
    assert [client.xlen(stream) for stream in (published, spooled)] == [1, 1]
    assert len(spool) == 0
