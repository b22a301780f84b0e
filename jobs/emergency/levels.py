"""Escalation: the scheduled job, and scheduling it.

`escalate(event_id, depts, level)` runs one level for the departments that have still not
acknowledged:

1. a reminder re-appended to the department's inbox (``via.escalation.kind = reminder``) and
   the department's ``fallback:`` channels, in order until one delivers;
2. the escalation ``chain``: each contact through its channels, and a notice in its
   department's inbox;
3. the ``coordinator`` (emergency management: a notice and its fallback channels) and a notice
   in every department's inbox (``broadcast_all``).

Each level is claimed atomically (`queues.acks.EmergencyStore.claim_level`): an acknowledgement
cancels every level not yet started, and a check that runs twice acts once. Each level that ran
is audited (``emergency.escalate`` in the audit chain) with every channel's result; the next
level is scheduled ``level_interval_s`` later.

Escalation jobs run on their own workers (``cityrelay worker --role escalation``): a fallback
channel retrying a dead endpoint must never hold up emergency routing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq import Queue

from jobs.context import RouteContext, get_context
from jobs.emergency.notices import _notices, _send, notice_event
from jobs.emergency.plan import EscalationPlan, plan_for
from queues.acks import EMERGENCY, EmergencyStatus, EmergencyStore
from queues.audit import AuditLog
from queues.keys import Keys
from queues.metrics import record_counts
from queues.priority import ESCALATION, make_queue

JOB_TIMEOUT_S = 600


FAILURE_TTL_S = 7 * 24 * 3600
ACTOR = "escalation"


def _queue(redis: Redis, keys: Keys) -> Queue:
    return make_queue(redis, keys, ESCALATION)


def job_id(keys: Keys, event_id: str, depts: Sequence[str], level: int, retry: str = "") -> str:
    """Deterministic (scheduling twice replaces, never doubles) and RQ-safe for any event id."""
    digest = hashlib.sha1(f"{event_id}|{','.join(sorted(depts))}".encode()).hexdigest()[:20]
    return f"{keys.name}-esc-{digest}-l{level}{retry}"


def schedule(
    queue: Queue,
    keys: Keys,
    event_id: str,
    depts: Sequence[str],
    level: int,
    at_ms: int,
    pipeline: Pipeline | None = None,
    retry: str = "",
) -> None:
    """Schedule `escalate` for these departments at `at_ms` (epoch ms), rounded up to the
    second: RQ's scheduled-job registry keeps whole seconds and would otherwise run it early."""
    queue.enqueue_at(
        datetime.fromtimestamp(math.ceil(at_ms / 1000), UTC),
        escalate,
        event_id,
        list(depts),
        level,
        prefix=keys.prefix,
        job_id=job_id(keys, event_id, depts, level, retry),
        job_timeout=JOB_TIMEOUT_S,
        result_ttl=0,
        failure_ttl=FAILURE_TTL_S,
        description=f"escalation level {level}: {event_id} for {', '.join(depts)}",
        pipeline=pipeline,
    )


def escalate(
    event_id: str, depts: list[str], level: int, prefix: str | None = None
) -> dict[str, str]:
    """RQ entry point: run escalation `level` for `depts`; returns each one's claim outcome."""
    context = get_context(prefix)
    return run_level(context, _job_connection(context), event_id, depts, level)


def _job_connection(context: RouteContext) -> Redis:
    from rq import get_current_job

    job = get_current_job()
    return job.connection if job is not None else context.redis()


def run_level(
    context: RouteContext, redis: Redis, event_id: str, depts: Sequence[str], level: int
) -> dict[str, str]:
    plan = plan_for(context)
    keys = context.keys
    store = EmergencyStore(redis, keys)
    status = store.status(event_id)
    if status is None:  # expired or never tracked: nothing to escalate
        return dict.fromkeys(depts, "untracked")
    outcomes: dict[str, str] = {}
    audit: list[tuple[str, dict[str, Any], str]] = []
    next_level: dict[float, list[str]] = {}
    now_ms = _redis_ms(redis)
    early: dict[int, list[str]] = {}
    counts: Counter[str] = Counter()  # for `cityrelay metrics` (queues/metrics.py keys)
    for dept in depts:
        due = _due_ms(plan, status, dept, level)
        if due is not None and now_ms < due:  # run early (clock skew): check again when due
            early.setdefault(due, []).append(dept)
            outcomes[dept] = "early"
            continue
        notices, via = _notices(plan, keys, dept, level)
        # Even a reminder to a recipient shows only the envelope and public text: the tracked
        # event is the full one, and the recipient may be entitled to less (its view is
        # already in its inbox).
        event = notice_event(status.event)
        fields = [("e", json.dumps(event, separators=(",", ":"))),
                  ("via", json.dumps(via, separators=(",", ":"))),
                  ("ing", status.ing or "0"), ("pri", EMERGENCY)]  # fmt: skip
        claim = store.claim_level(event_id, dept, level, notices, fields)
        outcomes[dept] = claim.outcome
        if claim.first_ack:  # the first check to see an acknowledgement audits it
            counts[f"ack_seen:l{level}"] += 1
            audit.append(("emergency.ack",
                          {"event": event_id, "dept": dept, "at_ms": claim.at_ms,
                           "seen_before_level": level}, claim.ack_by or "unknown"))  # fmt: skip
        if not claim.run:
            continue
        sends = _send(plan, status, dept, level)
        if claim.outcome == "claimed":
            counts[f"escalation:l{level}"] += 1
        for send in sends:
            counts[f"notify:{send['channel']}:{'ok' if send['ok'] else 'failed'}"] += 1
        result = {
            "kind": via["escalation"]["kind"],
            "notices": [stream.rsplit(":", 1)[-1] for stream in notices],
            "reached": any(r["ok"] for r in sends) or bool(notices),
            "channels": sends,
        }
        store.finish_level(event_id, dept, level, result)
        audit.append(("emergency.escalate",
                      {"event": event_id, "dept": dept, "level": level, "claim": claim.outcome,
                       **result}, ACTOR))  # fmt: skip
        escalation = plan.escalation(dept)
        if level < escalation.max_level:
            next_level.setdefault(escalation.level_interval_s, []).append(dept)
    if audit:
        AuditLog(redis, keys).append_many(audit)
    if counts:
        pipe = redis.pipeline(transaction=False)
        record_counts(pipe, keys, counts)
        pipe.execute()
    queue = _queue(redis, keys)
    for interval, group in next_level.items():
        schedule(queue, keys, event_id, group, level + 1, now_ms + int(interval * 1000))
    for due, group in early.items():  # a new job id: this job's own is deleted when it ends
        schedule(queue, keys, event_id, group, level, due, retry=f"-at{due}")
    return outcomes


def _due_ms(plan: EscalationPlan, status: EmergencyStatus, dept: str, level: int) -> int | None:
    """When this level is due: the deadline, or the previous level's start plus the interval
    (None when unknown: the department was not a recipient or the previous level never ran)."""
    recipient = status.recipients.get(dept)
    if recipient is None:
        return None
    if level == 1:
        return recipient.deadline_ms
    previous = recipient.levels.get(level - 1)
    if previous is None:
        return None
    return previous.at_ms + int(plan.escalation(dept).level_interval_s * 1000)


def _redis_ms(redis: Redis) -> int:
    secs, micros = redis.time()
    return int(secs) * 1000 + int(micros) // 1000
