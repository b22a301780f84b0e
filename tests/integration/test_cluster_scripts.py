"""Lua scripts queued on a cluster pipeline run on a node that has never seen them.

redis-py sends a script on a cluster pipeline as EVALSHA and leaves NOSCRIPT to the caller; a
node's script cache is empty on a new cluster, after a restart and on a promoted replica. Ingest
queues its dedupe claim script on a pipeline, and its first batch on a fresh cluster failed
with NOSCRIPT (the process exited; nothing was routed). `RQCluster` loads the queued scripts
on every primary before the pipeline runs (queues/rq_cluster.py)."""

from __future__ import annotations

import uuid

from queues.connect import redis_from_url
from tests.integration.acknowledged_load import wait_until
from workers.standin_cluster import LocalRedisCluster


def test_a_script_never_loaded_runs_on_a_pipeline_and_again_after_a_flush(
    cluster: LocalRedisCluster,
) -> None:
    client = redis_from_url(cluster.url)
    marker = uuid.uuid4().hex  # a script body no node has cached
    script = client.register_script(
        f"-- {marker}\nredis.call('INCR', KEYS[1]) return redis.call('GET', KEYS[1])"
    )
    key = "{group}:counter"
    pipe = client.pipeline()
    script(keys=[key], client=pipe)
    pipe.incr("{group}:other")
    assert pipe.execute() == [b"1", 1]
    for port in cluster.primary_ports():  # as after a restart: every node's cache empty
        cluster.node(port).script_flush()
    pipe = client.pipeline(transaction=False)
    script(keys=[key], client=pipe)
    script(keys=[key], client=pipe)
    assert pipe.execute() == [b"2", b"3"]
    assert client.get(key) == b"3"  # each queued call ran once: nothing doubled


def test_a_transaction_retried_on_a_promoted_replica_loads_its_scripts_there_first(
    cluster: LocalRedisCluster,
) -> None:
    """The client's slot map still names the old primary when its replica has taken over: the
    transaction meets MOVED there and is retried on the promoted replica, whose script cache is
    empty. Loading the scripts only once, before the first attempt, ran EVALSHA into NOSCRIPT
    inside EXEC, which had already applied the transaction's other commands."""
    client = redis_from_url(cluster.url)
    marker = uuid.uuid4().hex
    script = client.register_script(f"-- {marker}\nreturn redis.call('INCR', KEYS[1])")
    key, other = "{group}:counter", "{group}:other"

    def transaction() -> list[object]:
        pipe = client.pipeline()
        pipe.incr(other)
        script(keys=[key], client=pipe)
        return pipe.execute()

    assert transaction() == [1, 1]  # loaded on every primary, the old one included
    old = cluster.owner(key)
    replica = cluster.replica_of(old)
    cluster.node(replica).execute_command("CLUSTER", "FAILOVER")  # a manual failover
    wait_until(lambda: cluster.owner(key) == replica, "the replica took over")
    assert transaction() == [2, 2]
    assert (client.get(other), client.get(key)) == (b"2", b"2")  # once each, nothing doubled
