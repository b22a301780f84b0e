"""Prometheus metrics from what the pipeline already counts in Redis.

Every process writes its counters and latency histograms to Redis once per batch (see
`queues.metrics`), so one exporter shows the whole city, however many workers run on however
many hosts: `cityrelay metrics --port 9108`. Collected at scrape time; nothing on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis import Redis

from queues.keys import Keys
from queues.metrics import PRIORITIES, histogram, read_stats
from queues.priority import ROLES, make_queue


class CityCollector(Collector):
    """Counters, queue depths, stream lengths and latency histograms of one city (prefix)."""

    def __init__(self, redis: Redis, keys: Keys, departments: list[str]):
        self.redis = redis
        self.keys = keys
        self.departments = departments

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        stats = read_stats(self.redis, self.keys)
        events_in = CounterMetricFamily(
            "cityrelay_events_in", "Events accepted at ingest", labels=["department"]
        )
        delivered = CounterMetricFamily(
            "cityrelay_deliveries",
            "Events delivered to a department's inbox",
            labels=["department"],
        )
        dead = CounterMetricFamily(
            "cityrelay_dead_letters", "Inputs refused, by reason", labels=["reason"]
        )
        totals = CounterMetricFamily(
            "cityrelay_events",
            "Routing outcomes (delivered, duplicates, denied...)",
            labels=["outcome"],
        )
        for name, value in stats.items():
            kind, _, label = name.partition(":")
            if kind == "in":
                events_in.add_metric([label], value)
            elif kind == "delivered" and label:
                delivered.add_metric([label], value)
            elif kind == "deadletter":
                dead.add_metric([label], value)
            elif not label:
                totals.add_metric([name], value)
        yield from (events_in, delivered, dead, totals)

        depth = GaugeMetricFamily(
            "cityrelay_queue_depth", "Jobs waiting per RQ queue", labels=["queue"]
        )
        for names in ROLES.values():
            for name in names:
                depth.add_metric([name], make_queue(self.redis, self.keys, name).count)
        yield depth

        pipe = self.redis.pipeline(transaction=False)
        streams = {
            "deadletter": self.keys.deadletter,
            "quarantine": self.keys.quarantine,
            "audit_inbox": self.keys.audit_inbox,
        }
        for key in streams.values():
            pipe.xlen(key)
        for dept in self.departments:
            pipe.xlen(self.keys.inbox(dept))
        lengths = pipe.execute()
        backlog = GaugeMetricFamily(
            "cityrelay_stream_length", "Entries in a stream", labels=["stream"]
        )
        for name, length in zip(streams, lengths, strict=False):
            backlog.add_metric([name], length)
        inbox = GaugeMetricFamily(
            "cityrelay_inbox_length", "Entries in a department's inbox", labels=["department"]
        )
        for dept, length in zip(self.departments, lengths[len(streams) :], strict=True):
            inbox.add_metric([dept], length)
        yield from (backlog, inbox)

        latency = HistogramMetricFamily(
            "cityrelay_delivery_latency_seconds",
            "Ingest XADD to inbox XADD, by priority",
            labels=["priority"],
        )
        for priority in PRIORITIES:
            hist = histogram(self.redis, self.keys, priority)
            if not hist:
                continue
            cumulative = 0
            buckets = []
            for bound in sorted(hist):
                cumulative += hist[bound]
                label = "+Inf" if bound == float("inf") else f"{bound / 1000:g}"
                buckets.append((label, cumulative))
            if buckets[-1][0] != "+Inf":
                buckets.append(("+Inf", cumulative))
            latency.add_metric([priority], buckets, sum_value=None)
        yield latency
