"""Counters and latency histograms kept in Redis, written once per batch.

Latency is measured from the ingest XADD to the inbox XADD, both on Redis's clock, and kept as a
histogram per priority (bucket upper bound in ms -> count), cheap enough to update on every batch
and precise enough for an operator's p50/p99 at a glance. Benchmarks measure exact latencies.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Mapping, Sequence

from redis import Redis
from redis.client import Pipeline

from queues.keys import Keys

BUCKETS_MS: tuple[float, ...] = (
    1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 2000, 5000, 10000, 30000, 60000, float("inf"),
)  # fmt: skip
PRIORITIES = ("emergency", "high", "routine", "bulk")


def bucket_of(latency_ms: float) -> float:
    return BUCKETS_MS[min(bisect.bisect_left(BUCKETS_MS, latency_ms), len(BUCKETS_MS) - 1)]


def record_latencies(pipe: Pipeline, keys: Keys, samples: Mapping[str, Sequence[float]]) -> None:
    for priority, values in samples.items():
        counts = Counter(bucket_of(v) for v in values)
        for bucket, count in counts.items():
            pipe.hincrby(keys.latency(priority), _label(bucket), count)


def _label(bucket: float) -> str:
    return "inf" if bucket == float("inf") else f"{bucket:g}"


def histogram(redis: Redis, keys: Keys, priority: str) -> dict[float, int]:
    raw = redis.hgetall(keys.latency(priority))
    return {float(k): int(v) for k, v in raw.items()}


def percentile(hist: Mapping[float, int], q: float) -> float | None:
    """Upper bound (ms) of the bucket holding the q-th quantile, or None without samples."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return bucket
    return max(hist)  # pragma: no cover - unreachable: seen reaches total


def read_stats(redis: Redis, keys: Keys) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in redis.hgetall(keys.stats).items()}


def handled(stats: dict[str, int]) -> int:
    """Published events the pipeline is done with: delivered, dropped as duplicates, or
    dead-lettered (with a reason). When it equals what was published, nothing is in flight."""
    dead = sum(v for k, v in stats.items() if k.startswith("deadletter:"))
    return stats.get("delivered", 0) + stats.get("ingest_duplicates", 0) + dead


def wait_until_handled(redis: Redis, keys: Keys, expected: int, timeout: float) -> bool:
    """Poll the counters until `expected` events are handled or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handled(read_stats(redis, keys)) >= expected:
            return True
        time.sleep(0.1)
    return False
