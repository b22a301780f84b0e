"""Removing everything one key prefix owns: for demos, benchmarks and test runs that share a
Redis with others (never FLUSHDB a database you did not create)."""

from __future__ import annotations

from redis import Redis

from queues.keys import Keys


def delete_city(redis: Redis, keys: Keys) -> int:
    """Delete the prefix's keys, its RQ queues and jobs, and its entries in RQ's registries.

    Job ids and queue names carry the prefix (see workers/ingest.py), so they are found by it.
    UNLINK, not DEL: a city's inboxes and hot tier can hold millions of entries, and DEL frees
    them inside the command, holding a shared Redis (and every emergency on it) for tens of ms.
    Returns how many keys were deleted.
    """
    prefix, name = keys.prefix, keys.name  # name: in RQ's queue names and job ids
    deleted = 0
    for pattern in (f"{prefix}:*", f"rq:*{name}*"):
        found = list(redis.scan_iter(pattern, count=1000))
        for start in range(0, len(found), 500):
            deleted += int(redis.unlink(*found[start : start + 500]))
    for registry in ("rq:queues", "rq:workers"):
        ours = [m for m in redis.smembers(registry) if name.encode() in m]
        if ours:
            redis.srem(registry, *ours)
    return deleted
