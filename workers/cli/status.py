"""CLI: `cityrelay status [--json]` - the city's state at a glance.

The same snapshot the Prometheus exporter serves (`queues.snapshot.city_snapshot`): per
department in/out and inbox backlog, per priority counts and latency, queue depths, dead letters
by reason, escalations and acknowledgements, workers alive per role, ingest consumers, hot tier.
On Redis Cluster also ``cluster``: each node, and each slot group's ingest backlog and outboxes
(queues/cluster_status.py); the rest is the figures of the group the prefix names.
The ``--json`` keys of earlier versions (``counters``, ``queues``, ``latency``, ``deadletters``)
keep their meaning; everything else was added beside them.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from queues.cluster import is_cluster_url
from queues.cluster_status import cluster_report, render_cluster
from queues.metrics import PRIORITIES, StatsView, percentile, read_stats
from queues.snapshot import ACK_WINDOW_S, Snapshot, city_snapshot
from workers.runtime import Runtime


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("status", help="counters, queue depths and latency at a glance")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)


def _departments(runtime: Runtime) -> list[str]:
    """The config's departments; without a config, the ones the counters name."""
    if runtime.config_path is not None:
        config, _ = runtime.city()
        return config.department_ids
    view = StatsView.of(read_stats(runtime.redis(), runtime.keys))
    return sorted(set(view.in_by_dept) | set(view.delivered_by_dept))


def report(snap: Snapshot) -> dict[str, Any]:
    view = snap.view
    latency = {}
    for priority, hist in snap.latency.items():
        latency[priority] = {
            "count": sum(hist.values()),
            "p50_ms_le": percentile(hist, 0.5),
            "p99_ms_le": percentile(hist, 0.99),
        }
    in_pri, out_pri = view.by_priority(view.events_in), view.by_priority(view.delivered)
    departments = {}
    for dept, inbox in snap.inboxes.items():
        departments[dept] = {
            "in": view.in_by_dept.get(dept, 0),
            "delivered": view.delivered_by_dept.get(dept, 0),
            "in_by_priority": {p: n for (d, p), n in sorted(view.events_in.items()) if d == dept},
            "delivered_by_priority": {
                p: n for (d, p), n in sorted(view.delivered.items()) if d == dept
            },
            "inbox": {
                "length": inbox.length,
                "pending": inbox.pending,
                "lag": inbox.lag,
                "trimmed": view.inbox_trimmed.get(dept, 0),
            },
        }
    acks = snap.acks
    return {
        # the keys of the first version
        "counters": snap.stats,
        "queues": snap.queues,
        "latency": latency,
        "deadletters": snap.streams.get("deadletter", 0),
        # added
        "priorities": {
            p: {"in": in_pri.get(p, 0), "delivered": out_pri.get(p, 0), **latency.get(p, {})}
            for p in PRIORITIES
        },
        "departments": departments,
        "deadletters_by_reason": dict(sorted(view.deadletters.items())),
        "gateway": {
            "in_by_dept": dict(sorted(view.gateway_in.items())),
            "refused_by_reason": dict(sorted(view.gateway_refused.items())),
        },
        "push": {
            "delivered_by_dept": dict(sorted(view.push_delivered.items())),
            "failed_sends_by_dept": dict(sorted(view.push_failed.items())),
        },
        "mqtt": {"in_by_dept": dict(sorted(view.mqtt_in.items()))},
        "jobs": {"started": snap.started, "failed": snap.failed},
        "streams": snap.streams,
        "emergencies": {
            "tracked": view.emergencies_tracked,
            "escalations_by_level": {str(k): v for k, v in sorted(view.escalations.items())},
            "acks_seen_by_level": {str(k): v for k, v in sorted(view.acks_seen.items())},
            "notifications": {f"{c}:{r}": n for (c, r), n in sorted(view.notifications.items())},
            "window_s": ACK_WINDOW_S,
            "recipients": {
                "acknowledged": acks.acknowledged,
                "waiting": acks.waiting,
                "overdue": acks.overdue,
            },
        },
        "workers": snap.workers,
        "ingest_lag": sum(snap.ingest_lag.values()),
        "ingest_pending": sum(c.pending for c in snap.consumers),
        "ingest_consumers": [
            {"name": c.name, "idle_s": c.idle_s, "pending": c.pending} for c in snap.consumers
        ],
        "backpressure": snap.backpressure,
        "hot_tier": {
            "events": sum(snap.hot_entries.values()),
            "bytes": snap.hot_bytes,
            "by_type": snap.hot_entries,
        },
    }


def cmd_status(args: argparse.Namespace, runtime: Runtime) -> int:
    redis = runtime.redis()
    departments = _departments(runtime)
    snap = city_snapshot(redis, runtime.keys, departments)
    data = report(snap)
    if is_cluster_url(runtime.redis_url):  # per node, and per slot group of the city
        config = runtime.city()[0] if runtime.config_path is not None else None
        data["cluster"] = cluster_report(redis, config, runtime.keys, departments)
    if args.json:
        print(json.dumps(data))
        return 0
    print(render(data))
    return 0


def _pairs(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in mapping.items()) or "none"


def render(data: dict[str, Any]) -> str:
    """The report as a few lines and two small tables."""
    jobs = data["jobs"]
    workers = ", ".join(
        f"{role} {w['alive']} ({w['busy']} busy)" for role, w in data["workers"].items()
    )
    lines = [
        f"queues: {_pairs(data['queues'])}",
        f"running: {_pairs({k: v for k, v in jobs['started'].items() if v})}"
        f"   failed (kept): {_pairs({k: v for k, v in jobs['failed'].items() if v})}",
        f"workers alive: {workers}",
        f"ingest: {data['ingest_lag']} unread, {data['ingest_pending']} read and not yet "
        "acknowledged; consumers: "
        + (
            ", ".join(
                f"{c['name']} idle {c['idle_s']:.1f}s pending {c['pending']}"
                for c in data["ingest_consumers"]
            )
            or "none"
        ),
        f"dead letters: {data['deadletters']} ({_pairs(data['deadletters_by_reason'])})",
    ]
    gateway = data["gateway"]
    if gateway["in_by_dept"] or gateway["refused_by_reason"]:
        lines.append(
            f"gateway: in {sum(gateway['in_by_dept'].values())} "
            f"({_pairs(gateway['in_by_dept'])}); refused {_pairs(gateway['refused_by_reason'])}"
        )
    push = data["push"]
    if push["delivered_by_dept"] or push["failed_sends_by_dept"]:
        lines.append(
            f"webhook push: delivered {_pairs(push['delivered_by_dept'])}; "
            f"failed sends (retried) {_pairs(push['failed_sends_by_dept'])}"
        )
    mqtt = data["mqtt"]["in_by_dept"]
    if mqtt:
        lines.append(f"mqtt bridge: in {sum(mqtt.values())} ({_pairs(mqtt)})")
    pressure = data.get("backpressure")
    if pressure:
        lines.append(
            f"BACKPRESSURE: routine publishes refused ({pressure.get('used_mb')} MB used, "
            f"high watermark {pressure.get('high_mb')} MB)"
        )
    trimmed = {d: v["inbox"]["trimmed"] for d, v in data["departments"].items()}
    if any(trimmed.values()):
        lines.append(
            f"inbox entries trimmed at the bound: {_pairs({d: n for d, n in trimmed.items() if n})}"
        )
    for priority, figures in data["latency"].items():
        lines.append(
            f"latency {priority:9s} n={figures['count']:<8} p50<={figures['p50_ms_le']:g} ms  "
            f"p99<={figures['p99_ms_le']:g} ms"
        )
    lines.append(f"{'priority':10s} {'in':>9s} {'delivered':>10s}")
    for priority, figures in data["priorities"].items():
        lines.append(f"{priority:10s} {figures['in']:>9} {figures['delivered']:>10}")
    lines.append(
        f"{'department':28s} {'in':>8s} {'delivered':>10s} {'inbox':>8s} {'pending':>8s} "
        f"{'unread':>8s}"
    )
    for dept, d in data["departments"].items():
        inbox = d["inbox"]
        if not (d["in"] or d["delivered"] or inbox["length"]):
            continue
        lag = "-" if inbox["lag"] is None else str(inbox["lag"])
        lines.append(
            f"{dept:28s} {d['in']:>8} {d['delivered']:>10} {inbox['length']:>8} "
            f"{inbox['pending']:>8} {lag:>8s}"
        )
    em = data["emergencies"]
    rec = em["recipients"]
    lines += [
        f"emergencies: tracked {em['tracked']}; "
        f"escalations by level {_pairs(em['escalations_by_level'])}; "
        f"acks seen by level {_pairs(em['acks_seen_by_level'])}",
        f"  notifications: {_pairs(em['notifications'])}",
        f"  recipients (last {em['window_s'] // 3600} h): acknowledged "
        f"{sum(rec['acknowledged'].values())}, waiting {sum(rec['waiting'].values())}, "
        f"overdue {sum(rec['overdue'].values())}"
        + (f" ({_pairs(rec['overdue'])})" if rec["overdue"] else ""),
        f"hot tier: {data['hot_tier']['events']} events, {data['hot_tier']['bytes']} bytes",
    ]
    if "cluster" in data:
        lines += render_cluster(data["cluster"])
    return "\n".join(lines)
