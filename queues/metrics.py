"""Counters and latency histograms kept in Redis, written once per batch.

Keys of the `Keys.stats` hash (each written in the pipeline a batch already sends):

- ``in:{dept}`` events accepted at ingest per producing department, ``delivered:{dept}`` events
  delivered per recipient department, ``delivered`` events routed, ``deadletter:{reason}``,
  ``ingest_duplicates`` and the other routing outcomes (``denied``, ``withheld``...);
- ``in_pri:{dept}:{priority}`` and ``delivered_pri:{dept}:{priority}``: the same two counts split
  by priority (new keys, so sums over ``in:*`` / ``delivered:*`` keep their meaning);
- ``emergency:tracked`` emergencies whose acknowledgement is tracked, ``escalation:l{n}``
  escalation levels started (one per recipient department and level), ``ack_seen:l{n}``
  acknowledgements first seen by the level-n check (which they cancelled), and
  ``notify:{channel}:ok|failed`` fallback notifications per channel kind;
- ``latency_sum_ms:{priority}``: the sum of the latencies the histogram counts (its ``_sum``);
- ``gateway_in:{dept}`` events the HTTP gateway accepted per department, and
  ``gateway_refused:{reason}`` requests (or, for a batch, events) it refused, by reason
  (``unauthorized``, ``forbidden``, ``too_large``, ``backpressure``... and the event reasons of
  the dead-letter stream); the gateway adds them about once a second (workers/gateway/);
- ``push_delivered:{dept}`` inbox messages `cityrelay push` delivered (a 2xx, then XACK) and
  ``push_failed:{dept}`` webhook sends that failed (each retried); ``mqtt_in:{dept}`` events
  `cityrelay mqtt-bridge` published per department.

Latency is measured from the ingest XADD to the inbox XADD, both on Redis's clock, and kept as a
histogram per priority (bucket upper bound in ms -> count), cheap enough to update on every batch
and precise enough for an operator's p50/p99 at a glance. Benchmarks measure exact latencies.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from redis import Redis
from redis.client import Pipeline

from queues.keys import Keys

BUCKETS_MS: tuple[float, ...] = (
    1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 2000, 5000, 10000, 30000, 60000, float("inf"),
)  # fmt: skip
PRIORITIES = ("emergency", "high", "routine", "bulk")


IN_PRI = "in_pri"
GATEWAY_IN = "gateway_in"
GATEWAY_REFUSED = "gateway_refused"
DELIVERED_PRI = "delivered_pri"
PUSH_DELIVERED = "push_delivered"
PUSH_FAILED = "push_failed"
MQTT_IN = "mqtt_in"


def in_key(dept: str, priority: str) -> str:
    return f"{IN_PRI}:{dept}:{priority}"


def delivered_key(dept: str, priority: str) -> str:
    return f"{DELIVERED_PRI}:{dept}:{priority}"


def record_counts(pipe: Pipeline, keys: Keys, counts: Mapping[str, int]) -> None:
    """Queue HINCRBYs of `counts` (stats field -> increment) on the batch's own pipeline."""
    for name, value in counts.items():
        if value:
            pipe.hincrby(keys.stats, name, value)


@dataclass
class StatsView:
    """The `p:stats` hash sorted by what it counts (for the exporter and `cityrelay status`)."""

    events_in: dict[tuple[str, str], int] = field(default_factory=dict)  # (dept, priority)
    delivered: dict[tuple[str, str], int] = field(default_factory=dict)  # (dept, priority)
    in_by_dept: dict[str, int] = field(default_factory=dict)
    delivered_by_dept: dict[str, int] = field(default_factory=dict)
    deadletters: dict[str, int] = field(default_factory=dict)  # reason
    outcomes: dict[str, int] = field(default_factory=dict)  # delivered, duplicates, denied...
    escalations: dict[int, int] = field(default_factory=dict)  # level
    acks_seen: dict[int, int] = field(default_factory=dict)  # level the ack cancelled
    notifications: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, result)
    emergencies_tracked: int = 0
    inbox_trimmed: dict[str, int] = field(default_factory=dict)  # dept (queues/limits.py)
    gateway_in: dict[str, int] = field(default_factory=dict)  # dept (HTTP gateway)
    gateway_refused: dict[str, int] = field(default_factory=dict)  # reason (HTTP gateway)
    push_delivered: dict[str, int] = field(default_factory=dict)  # dept (`cityrelay push`)
    push_failed: dict[str, int] = field(default_factory=dict)  # dept: failed webhook sends
    mqtt_in: dict[str, int] = field(default_factory=dict)  # dept (`cityrelay mqtt-bridge`)

    @classmethod
    def of(cls, stats: Mapping[str, int]) -> StatsView:
        view = cls()
        for name, value in stats.items():
            kind, _, label = name.partition(":")
            if kind in (IN_PRI, DELIVERED_PRI):
                dept, _, priority = label.rpartition(":")
                target = view.events_in if kind == IN_PRI else view.delivered
                target[(dept, priority)] = value
            elif kind == "in":
                view.in_by_dept[label] = value
            elif kind == "delivered" and label:
                view.delivered_by_dept[label] = value
            elif kind == "deadletter":
                view.deadletters[label] = value
            elif kind == "escalation" and label[1:].isdigit():
                view.escalations[int(label[1:])] = value
            elif kind == "ack_seen" and label[1:].isdigit():
                view.acks_seen[int(label[1:])] = value
            elif kind == "notify":
                channel, _, result = label.rpartition(":")
                view.notifications[(channel, result)] = value
            elif name == "emergency:tracked":
                view.emergencies_tracked = value
            elif kind == "inbox_trimmed":
                view.inbox_trimmed[label] = value
            elif kind == GATEWAY_IN:
                view.gateway_in[label] = value
            elif kind == GATEWAY_REFUSED:
                view.gateway_refused[label] = value
            elif kind == PUSH_DELIVERED:
                view.push_delivered[label] = value
            elif kind == PUSH_FAILED:
                view.push_failed[label] = value
            elif kind == MQTT_IN:
                view.mqtt_in[label] = value
            elif not label:
                view.outcomes[name] = value
        return view

    @staticmethod
    def by_priority(counts: Mapping[tuple[str, str], int]) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for (_, priority), value in counts.items():
            totals[priority] += value
        return dict(totals)


def bucket_of(latency_ms: float) -> float:
    return BUCKETS_MS[min(bisect.bisect_left(BUCKETS_MS, latency_ms), len(BUCKETS_MS) - 1)]


def record_latencies(pipe: Pipeline, keys: Keys, samples: Mapping[str, Sequence[float]]) -> None:
    for priority, values in samples.items():
        counts = Counter(bucket_of(v) for v in values)
        for bucket, count in counts.items():
            pipe.hincrby(keys.latency(priority), _label(bucket), count)
        if values:  # the histogram's _sum (whole ms: the stats hash holds integers)
            pipe.hincrby(keys.stats, latency_sum_key(priority), round(sum(values)))


def latency_sum_key(priority: str) -> str:
    return f"latency_sum_ms:{priority}"


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
