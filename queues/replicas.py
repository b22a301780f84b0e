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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# The slot is served elsewhere now, or is being moved: follow it, as the cluster client does.
_REDIRECTED = (AskError, TryAgainError)  # MovedError is an AskError
_REDIRECTS_FOLLOWED = 5
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
    redirects = failures = 0
    while True:
        node = redis.get_node_from_key(key)  # the primary, as the client's slot map says
        pipe = redis.get_redis_connection(node).pipeline(transaction=False)
        queue_writes(pipe)
        pipe.wait(replicas, timeout_ms)
        try:
            return pipe.execute()
        except (*_REDIRECTED, *_GONE) as exc:
            try:  # so that this call's next round trip, or the caller's next call, finds it
                redis.nodes_manager.initialize()
            except RedisError as refresh:
                raise exc from refresh
            if isinstance(exc, _REDIRECTED):
                redirects += 1
                if redirects > _REDIRECTS_FOLLOWED:
                    raise
                continue
            failures += 1
            if failures > redis.retry.get_retries():
                raise
            time.sleep(min(0.05 * 2**failures, 1.0))
