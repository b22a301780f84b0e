"""The delivery script on Redis Cluster: with a slot group's keys (a hash-tagged prefix) the one
atomic script per batch runs as on a single Redis, deduplicating a re-run; with a plain prefix
the same batch spans slots and the cluster client refuses it before anything is written."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from queues.connect import cluster_client_from_url
from queues.inbox import Deliverer, EventDelivery, Output
from queues.keys import Keys
from workers.standin_cluster import LocalRedisCluster


@pytest.fixture
def client(cluster: LocalRedisCluster) -> Iterator[RedisCluster]:
    redis = cluster_client_from_url(cluster.url)
    yield redis
    redis.close()


def _batch(keys: Keys) -> list[EventDelivery]:
    return [
        EventDelivery(
            seen_key=keys.seen("police", f"e{i}"),
            outputs=[
                Output(keys.inbox("fire"), [("e", f'{{"id":"e{i}"}}')]),
                Output(keys.inbox("transit"), [("e", f'{{"id":"e{i}"}}')]),
                Output(keys.hot("public-safety.incident"), [("e", f'{{"id":"e{i}"}}')]),
            ],
            counts=["delivered:fire", "delivered:transit"],
        )
        for i in range(3)
    ]


def test_a_slot_group_delivers_each_event_once_on_a_cluster(client: RedisCluster) -> None:
    keys = Keys(f"{{t{uuid.uuid4().hex[:10]}}}")
    deliverer = Deliverer(client, dedupe_ttl_s=60, stats_key=keys.stats)  # type: ignore[arg-type]
    assert deliverer.deliver(_batch(keys)).flags == [True, True, True]
    assert deliverer.deliver(_batch(keys)).flags == [False, False, False]  # a re-run job
    assert (client.xlen(keys.inbox("fire")), client.xlen(keys.inbox("transit"))) == (3, 3)
    assert client.hget(keys.stats, "delivered:fire") == b"3"


def test_a_plain_prefix_spans_slots_and_is_refused_whole(client: RedisCluster) -> None:
    keys = Keys(f"t{uuid.uuid4().hex[:10]}")
    deliverer = Deliverer(client, dedupe_ttl_s=60, stats_key=keys.stats)  # type: ignore[arg-type]
    with pytest.raises(RedisClusterException, match="same key slot"):
        deliverer.deliver(_batch(keys))
    assert client.exists(keys.inbox("fire"), keys.inbox("transit")) == 0
