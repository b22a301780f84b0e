"""``redis+cluster://`` URLs: the nodes a cluster client starts from, and what is refused."""

from __future__ import annotations

import pytest
from redis.exceptions import RedisClusterException

from queues.cluster import parse_cluster_url
from queues.connect import cluster_client_from_url, redis_from_url


def test_cluster_url_with_several_nodes_and_credentials() -> None:
    spec = parse_cluster_url("redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,node-3:7002/")
    assert spec.nodes == [("10.0.0.1", 7000), ("10.0.0.2", 6379), ("node-3", 7002)]
    assert (spec.username, spec.password) == ("app", "s@cret")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost/0", "not a redis\\+cluster"),
        ("redis+cluster://a:1,,b:2", "empty host"),
        ("redis+cluster://a:x", "port 'x' is not a number"),
        ("redis+cluster://a:1/2", "no database number"),
        ("redis+cluster://a:1?read_from_replicas=1", "no options"),
    ],
)
def test_bad_cluster_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cluster_url(url)


def test_the_processes_refuse_a_cluster_url_plainly() -> None:
    # A process that took a cluster URL would fail later on its first CROSSSLOT script call.
    with pytest.raises(ValueError, match="do not run on Redis Cluster yet"):
        redis_from_url("redis+cluster://127.0.0.1:7000")


def test_a_cluster_client_with_no_node_answering_fails_at_once() -> None:
    # RedisCluster reads the slot map in its constructor: an unreachable cluster is an error
    # at start-up, not on the first command.
    with pytest.raises(RedisClusterException):
        cluster_client_from_url(
            "redis+cluster://127.0.0.1:1", retries=0, socket_connect_timeout=0.2
        )
