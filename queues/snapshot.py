"""One read of a city's operational state: counters, queues, inboxes, workers, consumers.

`city_snapshot` takes a handful of pipelined round trips whatever the number of departments;
the Prometheus exporter (`queues.observe`) and `cityrelay status` both show it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from queues.keys import ROUTER_GROUP, Keys
from queues.metrics import PRIORITIES, StatsView
from queues.priority import ROLES, make_queue, queue_name

# Emergencies looked at for the acknowledgement gauges: delivered within this window, newest
# first, at most this many (an alert wants what is open now, not last week's history).
ACK_WINDOW_S = 24 * 3600
ACK_WINDOW_MAX = 500


@dataclass
class InboxState:
    length: int
    pending: int  # delivered to the department's consumers, not yet acknowledged
    lag: int | None  # not yet read by the department (None: never read, or unknown)


@dataclass
class ConsumerState:
    name: str
    idle_s: float  # since its last read or claim, the least over all ingest streams
    pending: int  # read, not yet acknowledged (held by this consumer)


@dataclass
class AckState:
    """Recipients of recent emergencies (`ACK_WINDOW_S`) by state, per department."""

    acknowledged: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)  # not acknowledged, deadline ahead
    overdue: dict[str, int] = field(default_factory=dict)  # not acknowledged, deadline passed


@dataclass
class Snapshot:
    stats: dict[str, int]
    view: StatsView
    queues: dict[str, int]  # queue -> jobs waiting
    started: dict[str, int]  # queue -> jobs running (RQ started registry)
    failed: dict[str, int]  # queue -> failed jobs kept
    latency: dict[str, dict[float, int]]  # priority -> histogram
    streams: dict[str, int]
    inboxes: dict[str, InboxState]
    workers: dict[str, dict[str, int]]  # role -> {"alive": n, "busy": n}
    consumers: list[ConsumerState]
    ingest_lag: dict[tuple[str, str], int]  # (department, lane) -> entries not yet read
    hot_entries: dict[str, int]
    hot_bytes: int
    acks: AckState
    backpressure: dict[str, Any] | None = None  # the memory guard's flag (queues/limits.py)


def city_snapshot(
    redis: Redis, keys: Keys, departments: Sequence[str], ack_window_s: int = ACK_WINDOW_S
) -> Snapshot:
    """Everything the exporter and `cityrelay status` show, in three pipelined round trips
    (two without open emergencies; one more on a cluster), whatever the number of
    departments."""
    queue_objs = {name: make_queue(redis, keys, name) for role in ROLES.values() for name in role}
    streams = {
        "deadletter": keys.deadletter,
        "quarantine": keys.quarantine,
        "audit_inbox": keys.audit_inbox,
    }
    lanes = [(d, lane) for d in departments for lane in ("routine", "emergency")]
    ingest_streams = [keys.ingest(d, lane) for d, lane in lanes]
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keys.stats)
    for priority in PRIORITIES:
        pipe.hgetall(keys.latency(priority))
    for q in queue_objs.values():
        pipe.llen(q.key)
        pipe.zcard(q.started_job_registry.key)
        pipe.zcard(q.failed_job_registry.key)
    for key in streams.values():
        pipe.xlen(key)
    for dept in departments:
        pipe.xlen(keys.inbox(dept))
        pipe.xinfo_groups(keys.inbox(dept))
    for role_queues in ROLES.values():
        pipe.smembers(WORKERS_BY_QUEUE_KEY % queue_name(keys, role_queues[0]))
    for stream in ingest_streams:
        pipe.xinfo_consumers(stream, ROUTER_GROUP)
        pipe.xinfo_groups(stream)
    clustered = isinstance(redis, RedisCluster)
    if not clustered:  # a cluster pipeline refuses TIME (it names no key): asked alone below
        pipe.time()
    pipe.smembers(keys.hot_types)
    # The window needs no precision: this host's clock; deadlines are compared on Redis's.
    since_ms = int((time.time() - ack_window_s) * 1000)
    pipe.zrevrangebyscore(keys.emergencies, "+inf", since_ms, start=0, num=ACK_WINDOW_MAX)
    pipe.get(keys.backpressure)
    replies = iter(pipe.execute(raise_on_error=False))

    stats = {_text(k): int(v) for k, v in _ok(next(replies), {}).items()}
    latency = {}
    for priority in PRIORITIES:
        raw = _ok(next(replies), {})
        if raw:
            latency[priority] = {float(k): int(v) for k, v in raw.items()}
    queues, started, failed = {}, {}, {}
    for name in queue_objs:
        queues[name] = int(_ok(next(replies), 0))
        started[name] = int(_ok(next(replies), 0))
        failed[name] = int(_ok(next(replies), 0))
    stream_lengths = {name: int(_ok(next(replies), 0)) for name in streams}
    inboxes = {}
    for dept in departments:
        length = int(_ok(next(replies), 0))
        groups = _ok(next(replies), [])
        pending = sum(int(g.get("pending", 0)) for g in groups)
        lags = [g.get("lag") for g in groups]
        lag = sum(int(x) for x in lags) if lags and all(x is not None for x in lags) else None
        inboxes[dept] = InboxState(length, pending, lag)
    worker_keys = {role: sorted(_text(k) for k in _ok(next(replies), set())) for role in ROLES}
    consumers: dict[str, ConsumerState] = {}
    ingest_lag: dict[tuple[str, str], int] = {}
    for dept_lane in lanes:
        found = _ok(next(replies), [])
        for g in _ok(next(replies), []):
            if _text(g.get("name")) == ROUTER_GROUP and g.get("lag") is not None:
                ingest_lag[dept_lane] = int(g["lag"])
        for c in found:
            name = _text(c["name"])
            idle_s = int(c.get("idle", 0)) / 1000
            known = consumers.get(name)
            if known is None:
                consumers[name] = ConsumerState(name, idle_s, int(c.get("pending", 0)))
            else:
                known.idle_s = min(known.idle_s, idle_s)
                known.pending += int(c.get("pending", 0))

    secs, _ = redis.time() if clustered else _ok(next(replies), (time.time(), 0))
    types = sorted(_text(t) for t in _ok(next(replies), set()))
    emergency_ids = [_text(e) for e in _ok(next(replies), [])]
    pressure = _ok(next(replies), None)

    # Second round trip: hot streams, worker keys, tracking records of recent emergencies.
    pipe = redis.pipeline(transaction=False)
    for event_type in types:
        pipe.xlen(keys.hot(event_type))
        pipe.memory_usage(keys.hot(event_type))  # sampled: SAMPLES 0 walks the whole stream
    for found in worker_keys.values():
        for key in found:
            pipe.exists(key)
            pipe.hget(key, "state")
    for event_id in emergency_ids:
        pipe.hgetall(keys.emergency(event_id))
    replies = iter(pipe.execute(raise_on_error=False))
    hot_entries, hot_bytes = {}, 0
    for event_type in types:
        hot_entries[event_type] = int(_ok(next(replies), 0))
        hot_bytes += int(_ok(next(replies), 0))
    workers = _workers(worker_keys, replies)
    records = [_ok(next(replies), {}) for _ in emergency_ids]
    return Snapshot(
        stats=stats,
        view=StatsView.of(stats),
        queues=queues,
        started=started,
        failed=failed,
        latency=latency,
        streams=stream_lengths,
        inboxes=inboxes,
        workers=workers,
        consumers=sorted(consumers.values(), key=lambda c: c.name),
        ingest_lag=ingest_lag,
        hot_entries=hot_entries,
        hot_bytes=hot_bytes,
        acks=_ack_state(redis, keys, int(secs) * 1000, emergency_ids, records),
        backpressure=json.loads(pressure) if pressure else None,
    )


def ingest_backlog(
    redis: Redis, streams: Sequence[str], group: str = ROUTER_GROUP
) -> dict[str, int]:
    """``lag`` (not yet read by the group) and ``pending`` (read, not acknowledged) summed over
    `streams`, from one pipelined XINFO GROUPS each."""
    pipe = redis.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_groups(stream)
    lag = pending = 0
    for groups in pipe.execute(raise_on_error=False):
        for g in _ok(groups, []):
            if _text(g.get("name")) == group:
                lag += int(g.get("lag") or 0)
                pending += int(g.get("pending") or 0)
    return {"lag": lag, "pending": pending}


def _workers(
    worker_keys: dict[str, list[str]], replies: Iterator[Any]
) -> dict[str, dict[str, int]]:
    """Alive (its key has not expired: RQ refreshes it with the heartbeat) and busy workers per
    role, from an EXISTS and HGET state per registered worker key. A crashed worker stays in
    RQ's registry set until a maintenance pass cleans it, but its key expires."""
    result = {}
    for role, found in worker_keys.items():
        alive = busy = 0
        for _ in found:
            exists, state = _ok(next(replies), 0), _ok(next(replies), None)
            if exists:
                alive += 1
                busy += state is not None and _text(state) == "busy"
        result[role] = {"alive": alive, "busy": busy}
    return result


def _ack_state(
    redis: Redis, keys: Keys, now_ms: int, ids: Sequence[str], records: Sequence[Any]
) -> AckState:
    """Who acknowledged the recent emergencies, who has not, and who is past the deadline.
    An acknowledgement no escalation check has copied into the record yet is looked up (one
    more round trip, only when some recipient has not acknowledged)."""
    state = AckState()
    open_rows: list[tuple[str, int]] = []  # (dept, deadline) without `acked` in the record
    pipe = redis.pipeline(transaction=False)
    for event_id, record in zip(ids, records, strict=True):
        fields = {_text(k): _text(v) for k, v in record.items()}
        for name, value in fields.items():
            dept, sep, what = name.partition("|")
            if not sep or what != "deadline":
                continue
            if f"{dept}|acked" in fields:
                state.acknowledged[dept] = state.acknowledged.get(dept, 0) + 1
            else:
                open_rows.append((dept, int(value)))
                pipe.get(keys.ack(dept, event_id))
    for (dept, deadline), ack in zip(open_rows, pipe.execute() if open_rows else [], strict=True):
        if ack is not None:  # any value acknowledges, as for the escalation check
            target = state.acknowledged
        else:
            target = state.overdue if now_ms > deadline else state.waiting
        target[dept] = target.get(dept, 0) + 1
    return state


def _ok(reply: Any, default: Any) -> Any:
    """A pipelined reply, or `default` when the command failed (say XINFO on a missing key)."""
    return default if isinstance(reply, Exception) or reply is None else reply


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
