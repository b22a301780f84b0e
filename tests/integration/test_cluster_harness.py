"""The Redis Cluster the cluster tests run on: 3 primaries and 3 replicas from
``redis-server --cluster-enabled yes`` on free loopback ports, joined by ``redis-cli --cluster
create``; a `redis+cluster://` client that follows slots across primaries and rides out the
SIGKILL of a primary; and no node left running after the fixture."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster

from queues.connect import cluster_client_from_url
from tests.conftest import require_redis_server
from workers.standin_cluster import LocalRedisCluster


@pytest.fixture
def client(cluster: LocalRedisCluster) -> Iterator[RedisCluster]:
    redis = cluster_client_from_url(cluster.url, decode_responses=True)
    yield redis
    redis.close()


def test_keys_spread_over_the_three_primaries(
    cluster: LocalRedisCluster, client: RedisCluster
) -> None:
    assert len(cluster.primary_ports()) == 3
    for i in range(60):
        client.set(f"k{i}", str(i))
    assert [client.get(f"k{i}") for i in range(60)] == [str(i) for i in range(60)]
    holders = {client.get_node_from_key(f"k{i}").port for i in range(60)}
    assert holders == set(cluster.primary_ports())


def test_one_hash_tag_is_one_slot_so_a_script_may_touch_all_its_keys(
    client: RedisCluster,
) -> None:
    # The rule every cityrelay delivery script will live by on a cluster.
    keys = ["{city.police}:inbox:police", "{city.police}:seen:police:e1"]
    assert len({client.keyslot(key) for key in keys}) == 1
    script = "redis.call('XADD', KEYS[1], '*', 'e', 'x'); return redis.call('SET', KEYS[2], 'd')"
    assert client.eval(script, 2, *keys) == "OK"
    assert client.xlen(keys[0]) == 1


def test_a_killed_primary_is_replaced_by_its_replica_and_writes_go_on(
    cluster: LocalRedisCluster, client: RedisCluster
) -> None:
    client.set("before", "1")
    victim = client.get_node_from_key("before").port
    cluster.kill(victim)
    # The client's retry policy spans the failover (node timeout 1 s): no retry loop here.
    client.set("before", "2")
    assert client.get("before") == "2"
    assert victim not in cluster.primary_ports()
    assert len(cluster.primary_ports()) == 3


def test_stop_leaves_no_node_running() -> None:
    require_redis_server("the cluster tests start their own 6-node Redis Cluster")
    nodes = LocalRedisCluster().start()
    pids = [nodes.pid(port) for port in nodes.ports]
    nodes.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
