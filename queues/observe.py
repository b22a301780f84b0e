"""Prometheus metrics from what the pipeline already counts in Redis.

Every process writes its counters and latency histograms to Redis once per batch (see
`queues.metrics`), so one exporter shows the whole city, however many workers run on however
many hosts: `cityrelay metrics --port 9108`. Collected at scrape time from one
`queues.snapshot.city_snapshot` (a few pipelined round trips); nothing on the hot path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from queues.keys import Keys
from queues.metrics import StatsView, latency_sum_key
from queues.snapshot import ACK_WINDOW_S, Snapshot, city_snapshot

log = logging.getLogger("cityrelay.metrics")

Family = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily


class CityCollector(Collector):
    """Counters, queue depths, stream lengths, workers and latency histograms of one city."""

    def __init__(self, redis: Redis, keys: Keys, departments: list[str]):
        self.redis = redis
        self.keys = keys
        self.departments = departments

    def collect(self) -> Iterator[Family]:
        started = time.monotonic()
        try:
            snap = city_snapshot(self.redis, self.keys, self.departments)
        except RedisError as exc:
            # A scrape while Redis is down (restarting, failing over) answers, and says so.
            log.warning(
                "redis unavailable; scrape without city metrics",
                extra={"error": f"{type(exc).__name__}: {exc}", "prefix": self.keys.prefix},
            )
            yield GaugeMetricFamily("cityrelay_redis_up", "Redis answered this scrape", value=0)
            return
        yield GaugeMetricFamily("cityrelay_redis_up", "Redis answered this scrape", value=1)
        yield from counters(snap.view)
        yield from gauges(snap)
        yield latency_histogram(snap.latency, snap.stats)
        yield GaugeMetricFamily(
            "cityrelay_scrape_seconds",
            "Time this exporter took to read the city's state from Redis",
            value=time.monotonic() - started,
        )


def _by_priority(
    name: str,
    doc: str,
    split: dict[tuple[str, str], int],
    totals: dict[str, int],
) -> CounterMetricFamily:
    """Per (department, priority); counts from before the per-priority keys existed (the
    per-department total exceeds the split) show as priority="unknown", so sums stay right."""
    family = CounterMetricFamily(name, doc, labels=["department", "priority"])
    split_sums: dict[str, int] = {}
    for (dept, priority), value in sorted(split.items()):
        family.add_metric([dept, priority], value)
        split_sums[dept] = split_sums.get(dept, 0) + value
    for dept, total in sorted(totals.items()):
        if total > split_sums.get(dept, 0):
            family.add_metric([dept, "unknown"], total - split_sums.get(dept, 0))
    return family


def counters(view: StatsView) -> Iterator[CounterMetricFamily]:
    yield _by_priority(
        "cityrelay_events_in",
        "Events accepted at ingest, by producing department and priority",
        view.events_in,
        view.in_by_dept,
    )
    yield _by_priority(
        "cityrelay_deliveries",
        "Events delivered to a department's inbox, by recipient department and priority",
        view.delivered,
        view.delivered_by_dept,
    )
    dead = CounterMetricFamily(
        "cityrelay_dead_letters", "Inputs refused, by reason", labels=["reason"]
    )
    for reason, value in sorted(view.deadletters.items()):
        dead.add_metric([reason], value)
    totals = CounterMetricFamily(
        "cityrelay_events",
        "Routing outcomes (delivered, duplicates, denied...)",
        labels=["outcome"],
    )
    for outcome, value in sorted(view.outcomes.items()):
        totals.add_metric([outcome], value)
    tracked = CounterMetricFamily(
        "cityrelay_emergencies_tracked", "Emergencies delivered with acknowledgement tracking"
    )
    tracked.add_metric([], view.emergencies_tracked)
    escalations = CounterMetricFamily(
        "cityrelay_escalations",
        "Escalation levels started (one per recipient department and level)",
        labels=["level"],
    )
    for level, value in sorted(view.escalations.items()):
        escalations.add_metric([str(level)], value)
    acks = CounterMetricFamily(
        "cityrelay_acknowledgements_seen",
        "Emergency acknowledgements recorded by an escalation check, by the level they cancelled",
        labels=["level"],
    )
    for level, value in sorted(view.acks_seen.items()):
        acks.add_metric([str(level)], value)
    notes = CounterMetricFamily(
        "cityrelay_fallback_notifications",
        "Escalation notifications sent through fallback channels, by channel and result",
        labels=["channel", "result"],
    )
    for (channel, result), value in sorted(view.notifications.items()):
        notes.add_metric([channel, result], value)
    trimmed = CounterMetricFamily(
        "cityrelay_inbox_trimmed",
        "Inbox entries trimmed at the inbox bound (the department stopped consuming)",
        labels=["department"],
    )
    for dept, value in sorted(view.inbox_trimmed.items()):
        trimmed.add_metric([dept], value)
    gateway_in = CounterMetricFamily(
        "cityrelay_gateway_events_in",
        "Events accepted by the HTTP gateway, by producing department",
        labels=["department"],
    )
    for dept, value in sorted(view.gateway_in.items()):
        gateway_in.add_metric([dept], value)
    gateway_refused = CounterMetricFamily(
        "cityrelay_gateway_refused",
        "Requests (and events of a batch) the HTTP gateway refused, by reason",
        labels=["reason"],
    )
    for reason, value in sorted(view.gateway_refused.items()):
        gateway_refused.add_metric([reason], value)
    yield from (dead, totals, tracked, escalations, acks, notes, trimmed)
    yield from (gateway_in, gateway_refused)
    yield from _per_department(
        ("cityrelay_push_delivered", "Inbox messages `cityrelay push` delivered (2xx, then XACK)",
         view.push_delivered),
        ("cityrelay_push_failed_sends", "Webhook sends that failed and were retried",
         view.push_failed),
        ("cityrelay_mqtt_events_in", "Events `cityrelay mqtt-bridge` published", view.mqtt_in),
    )  # fmt: skip


def _per_department(
    *families: tuple[str, str, dict[str, int]],
) -> Iterator[CounterMetricFamily]:
    """One counter family per (name, help, values by department)."""
    for name, text, values in families:
        family = CounterMetricFamily(name, text, labels=["department"])
        for dept, value in sorted(values.items()):
            family.add_metric([dept], value)
        yield family


def gauges(snap: Snapshot) -> Iterator[GaugeMetricFamily]:
    depth = GaugeMetricFamily(
        "cityrelay_queue_depth", "Jobs waiting per RQ queue", labels=["queue"]
    )
    jobs = GaugeMetricFamily(
        "cityrelay_jobs", "Jobs running or failed per RQ queue", labels=["queue", "state"]
    )
    for name, waiting in snap.queues.items():
        depth.add_metric([name], waiting)
        jobs.add_metric([name, "started"], snap.started[name])
        jobs.add_metric([name, "failed"], snap.failed[name])
    yield from (depth, jobs)

    backlog = GaugeMetricFamily("cityrelay_stream_length", "Entries in a stream", labels=["stream"])
    for name, length in snap.streams.items():
        backlog.add_metric([name], length)
    inbox = GaugeMetricFamily(
        "cityrelay_inbox_length", "Entries in a department's inbox", labels=["department"]
    )
    pending = GaugeMetricFamily(
        "cityrelay_inbox_pending",
        "Inbox entries read by the department and not yet acknowledged",
        labels=["department"],
    )
    lag = GaugeMetricFamily(
        "cityrelay_inbox_lag",
        "Inbox entries the department has not read yet (absent until its first read)",
        labels=["department"],
    )
    for dept, state in snap.inboxes.items():
        inbox.add_metric([dept], state.length)
        pending.add_metric([dept], state.pending)
        if state.lag is not None:
            lag.add_metric([dept], state.lag)
    pressure = GaugeMetricFamily(
        "cityrelay_backpressure",
        "1 while Redis memory is above the high watermark and routine publishes are refused",
    )
    pressure.add_metric([], 1 if snap.backpressure else 0)
    yield from (backlog, inbox, pending, lag, pressure)

    workers = GaugeMetricFamily(
        "cityrelay_workers", "RQ workers alive per role, idle or busy", labels=["role", "state"]
    )
    for role, figures in snap.workers.items():
        workers.add_metric([role, "busy"], figures["busy"])
        workers.add_metric([role, "idle"], figures["alive"] - figures["busy"])
    idle = GaugeMetricFamily(
        "cityrelay_ingest_consumer_idle_seconds",
        "Seconds since an ingest consumer last read (least over the ingest streams)",
        labels=["consumer"],
    )
    held = GaugeMetricFamily(
        "cityrelay_ingest_consumer_pending",
        "Ingest entries a consumer read and has not acknowledged",
        labels=["consumer"],
    )
    for consumer in snap.consumers:
        idle.add_metric([consumer.name], consumer.idle_s)
        held.add_metric([consumer.name], consumer.pending)
    unread = GaugeMetricFamily(
        "cityrelay_ingest_lag",
        "Entries in an ingest stream no ingest consumer has read yet",
        labels=["department", "lane"],
    )
    for (dept, lane), waiting in snap.ingest_lag.items():
        unread.add_metric([dept, lane], waiting)
    yield from (workers, idle, held, unread)

    hot = GaugeMetricFamily(
        "cityrelay_hot_tier_entries", "Events in the hot tier, by type", labels=["type"]
    )
    for event_type, length in sorted(snap.hot_entries.items()):
        hot.add_metric([event_type], length)
    yield hot
    yield GaugeMetricFamily(
        "cityrelay_hot_tier_bytes",
        "Memory the hot tier streams use (sampled estimate)",
        value=snap.hot_bytes,
    )
    recipients = GaugeMetricFamily(
        "cityrelay_emergency_recipients",
        f"Recipients of emergencies of the last {ACK_WINDOW_S // 3600} h by acknowledgement state",
        labels=["department", "state"],
    )
    for ack_state, counts in (
        ("acknowledged", snap.acks.acknowledged),
        ("waiting", snap.acks.waiting),
        ("overdue", snap.acks.overdue),
    ):
        for dept, value in sorted(counts.items()):
            recipients.add_metric([dept, ack_state], value)
    yield recipients


def latency_histogram(
    latency: dict[str, dict[float, int]], stats: dict[str, int]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "cityrelay_delivery_latency_seconds",
        "Ingest XADD to inbox XADD, by priority",
        labels=["priority"],
    )
    for priority, hist in latency.items():
        cumulative = 0
        buckets = []
        for bound in sorted(hist):
            cumulative += hist[bound]
            label = "+Inf" if bound == float("inf") else f"{bound / 1000:g}"
            buckets.append((label, cumulative))
        if buckets[-1][0] != "+Inf":
            buckets.append(("+Inf", cumulative))
        sum_ms = stats.get(latency_sum_key(priority), 0)
        family.add_metric([priority], buckets, sum_value=sum_ms / 1000)
    return family
