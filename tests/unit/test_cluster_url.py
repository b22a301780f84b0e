"""``redis+cluster://`` URLs: the nodes a cluster client starts from, and what is refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from redis.exceptions import RedisClusterException

from queues.cluster import parse_cluster_url
from queues.connect import cluster_client_from_url
from workers.runtime import Runtime


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


def test_a_process_on_a_cluster_needs_a_hash_tag_prefix() -> None:
    # Without one its keys spread over slots: the first script or MULTI would fail CROSSSLOT.
    runtime = Runtime("redis+cluster://127.0.0.1:1", "city", None)
    with pytest.raises(SystemExit, match="use a hash tag such as '{city}'"):
        runtime.redis()


def test_a_process_on_a_cluster_needs_rq_keys_in_its_slot() -> None:
    # This test process imported rq with its default prefix: RQ's keys would be elsewhere.
    runtime = Runtime("redis+cluster://127.0.0.1:1", "{city}", None)
    with pytest.raises(SystemExit, match="needs '{city}:rq'"):
        runtime.redis()


def test_the_cli_sets_rq_key_prefix_for_a_cluster_before_rq_is_imported() -> None:
    code = (
        "import sys; from workers.runtime import Runtime; "
        "Runtime('redis+cluster://h:1', '{north}', None).use_rq_key_prefix(); "
        "import rq.defaults; print(rq.defaults.RQ_KEY_PREFIX)"
    )
    env = {k: v for k, v in os.environ.items() if k != "RQ_KEY_PREFIX"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "{north}:rq", out.stderr


def test_a_cluster_client_with_no_node_answering_fails_at_once() -> None:
    # RedisCluster reads the slot map in its constructor: an unreachable cluster is an error
    # at start-up, not on the first command.
    with pytest.raises(RedisClusterException):
        cluster_client_from_url(
            "redis+cluster://127.0.0.1:1", retries=0, socket_connect_timeout=0.2
        )
