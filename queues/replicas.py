"""Writes acknowledged only once replicas hold them: the writes, then ``WAIT``, on ONE
connection to the primary that took them.

``WAIT n timeout`` counts the replicas that confirmed every write *of the connection it is sent
on*. On a plain or Sentinel client a pipeline is one connection, so queueing WAIT after the
writes is enough. A cluster pipeline is not: redis-py sends each command to the node its key
names, and WAIT, which has no key, to the client's default node. There it answered for a
connection that had written nothing (``min_replicas=1`` acknowledged events whose primary had
no replica online), and once a failover had left the default node a replica it failed every
publish with "WAIT cannot be used with replica instances". On a cluster, `write_then_wait`
pipelines the writes and WAIT on the node client of the primary that serves `key` (every key
the writes name must be in that slot: one slot group), and follows the cluster when that
primary has lost the slot or is gone: the client's slot map is read again and the round trip
sent again, within the client's retry budget. Sending the writes again is safe for callers
whose writes are idempotent or deduplicated (producers: ingest drops copies by event id).

While the slot migrates (``redis-cli --cluster reshard``), the node clients used here get the
refusals that `RedisCluster` would otherwise handle: ``ASK`` (the key is on the target
already), ``TRYAGAIN`` (a multi-key write whose keys are split between the nodes), ``MOVED``
once the slot has been handed over. ``MOVED`` reads the slot map again and goes to the new
owner. ``ASK`` is not followed (``ASKING`` on the target): the writes and WAIT would then be
split over two connections, and WAIT could answer for only part of them. Instead, ``ASK`` and
``TRYAGAIN`` are waited out with `queues.cluster_migration.until_migrated` (10 ms growing to
200 ms, `MIGRATION_WAIT_S` in all), as every other multi-key call of a slot group is: such a
publish or spool replay takes as long as the migration of its slot, and a migration longer
than `MIGRATION_WAIT_S` raises the refusal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    MovedError,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from queues.cluster_migration import until_migrated

# The primary is gone or the cluster is failing over: the client's retry budget applies.
_GONE = (ClusterDownError, RedisConnectionError, RedisTimeoutError)


def write_then_wait(
    redis: Redis | RedisCluster,
    key: str,
    queue_writes: Callable[[Pipeline], object],
    replicas: int,
    timeout_ms: int,
) -> list[Any]:
    """Send the writes `queue_writes` puts on a pipeline, then ``WAIT replicas timeout_ms``, in
    one round trip on one connection; returns the replies, WAIT's (the replica count) last."""
    if not isinstance(redis, RedisCluster):
        pipe = redis.pipeline(transaction=False)
        queue_writes(pipe)
        pipe.wait(replicas, timeout_ms)
        return pipe.execute()
    cluster = redis

    def round_trip() -> list[Any]:
        node = cluster.get_node_from_key(key)  # the primary, as the client's slot map says
        pipe = cluster.get_redis_connection(node).pipeline(transaction=False)
        queue_writes(pipe)
        pipe.wait(replicas, timeout_ms)
        try:
            return pipe.execute()
        except MovedError:  # handed over: the next round trip goes to the new owner
            _read_slot_map(cluster)
            raise

    failures = 0
    while True:
        try:
            return until_migrated(round_trip)  # MOVED, ASK, TRYAGAIN: sent again after a pause
        except _GONE as exc:
            _read_slot_map(cluster, exc)
            failures += 1
            if failures > cluster.retry.get_retries():
                raise
            time.sleep(min(0.05 * 2**failures, 1.0))


def _read_slot_map(cluster: RedisCluster, cause: BaseException | None = None) -> None:
    """Ask the cluster who serves which slot again, so that this call's next round trip, or
    the caller's next call, finds the key's primary; a refresh that fails raises `cause`."""
    try:
        cluster.nodes_manager.initialize()
    except RedisError as refresh:
        if cause is None:
            raise
        raise cause from refresh
