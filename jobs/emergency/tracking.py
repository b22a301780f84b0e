"""Emergency acknowledgement tracking, called by the route job.

The route job calls `track_emergencies` after its delivery script: every freshly delivered
emergency-priority event gets a tracking record (delivery time and, per recipient, the deadline
its ``escalation:`` config sets for the event's severity) and one scheduled `escalate` job per
distinct deadline, on the ``{prefix}.escalation`` RQ queue (JSON serializer; its workers run
RQ's scheduler, which enqueues the job when due).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from redis.client import Pipeline

from city.escalation import (
    severity_of,
)
from city.routing import Delivery
from jobs.context import RouteContext
from jobs.emergency.levels import _queue, schedule
from jobs.emergency.plan import plan_for
from queues.acks import EMERGENCY, track
from queues.rq_cluster import client_of

Recipients = Iterable[Delivery | str] | Any  # deliveries, department ids, or `.deliveries`


def recipients_of(decision: Recipients) -> list[str]:
    """Department ids from a list of `Delivery` (or of ids), or an object with `.deliveries`."""
    deliveries = getattr(decision, "deliveries", decision)
    return list(dict.fromkeys(d if isinstance(d, str) else d.dept for d in deliveries))


def track_emergencies(
    pipe: Pipeline,
    context: RouteContext,
    routed: Sequence[tuple[dict[str, Any], Recipients, dict[str, Any]]],
    fresh: Sequence[bool],
    now_s: float,
) -> int:
    """Queue on `pipe` the tracking record and first escalation check of every freshly
    delivered emergency in the batch; returns how many were tracked. Costs nothing for a batch
    without emergencies. `routed` holds (wire event, its recipients, the job item); pass only
    the departments that actually received it (not those a policy withheld it from).

    An emergency delivered before but never tracked - its job died between the delivery
    script and this pipeline, and this is the re-run - is tracked now, its deadlines counted
    from when it was accepted at ingest: a crash must not cost an emergency its escalation.
    """
    delivered_ms = int(now_s * 1000)
    candidates = [
        (event, depts, item, is_fresh)
        for (event, decision, item), is_fresh in zip(routed, fresh, strict=True)
        if event.get("priority") == EMERGENCY and (depts := recipients_of(decision))
    ]
    rerun = [c for c in candidates if not c[3]]
    if rerun:  # one round trip, only on a re-run
        check = client_of(pipe).pipeline(transaction=False)
        for event, *_ in rerun:
            check.exists(context.keys.emergency(str(event["id"])))
        untracked = {id(c[0]) for c, found in zip(rerun, check.execute(), strict=True) if not found}
    else:
        untracked = set()
    tracked = 0
    for event, depts, item, is_fresh in candidates:
        if not is_fresh and id(event) not in untracked:
            continue
        ing = str(item.get("ing", ""))
        base_ms = delivered_ms if is_fresh or not ing else int(ing.split("-", 1)[0])
        _track_one(pipe, context, event, depts, ing, base_ms)
        tracked += 1
    return tracked


def _track_one(
    pipe: Pipeline,
    context: RouteContext,
    event: dict[str, Any],
    depts: Sequence[str],
    ing: str,
    delivered_ms: int,
) -> None:
    plan = plan_for(context)
    severity = severity_of(event)
    deadlines = {
        dept: delivered_ms + int(plan.escalation(dept).deadline_s(severity) * 1000)
        for dept in depts
    }
    event_id = str(event["id"])
    body = json.dumps(event, separators=(",", ":"))
    track(pipe, context.keys, event_id, body, severity, ing, delivered_ms, deadlines)
    groups: dict[int, list[str]] = {}
    for dept, deadline in deadlines.items():
        if plan.escalation(dept).max_level >= 1:
            groups.setdefault(deadline, []).append(dept)
    queue = _queue(client_of(pipe), context.keys)
    for deadline, group in groups.items():
        schedule(queue, context.keys, event_id, group, 1, deadline, pipeline=pipe)
