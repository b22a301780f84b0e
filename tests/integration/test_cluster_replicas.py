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
import uuid

import pytest

from city.events import Event, source_for
from queues.connect import PRODUCER_SETTINGS, redis_from_url
from queues.keys import Keys
from queues.streams import NotReplicatedError, Producer
from tests.integration.acknowledged_load import wait_until
from workers.standin_cluster import LocalRedisCluster

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
