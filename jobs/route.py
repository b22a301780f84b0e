"""The route job: one micro-batch (or one emergency event) from ingest to department inboxes.

geo + subscriptions (the core `Router`) -> one view per recipient -> one atomic, idempotent Lua
delivery (inboxes + hot tier + dedupe marker) -> counters. The job is thin: the decisions live
in `city/`, the Redis writes in `queues/`.

An event the router cannot handle (for example a self-intersecting area) is dead-lettered with
the reason; it never fails the rest of its batch.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from redis import Redis

from city.routing import Delivery
from jobs.context import RouteContext, get_context
from jobs.emergency import track_emergencies
from queues.inbox import EventDelivery, Output
from queues.metrics import record_latencies
from queues.streams import dead_letter


def route_batch(items: list[dict[str, Any]], prefix: str | None = None) -> dict[str, int]:
    """RQ entry point. `items` are ``{"e": wire event, "ing": ingest entry id}``."""
    context = get_context(prefix)
    return deliver_items(context, _job_connection(context), items)


def _job_connection(context: RouteContext) -> Redis:
    from rq import get_current_job

    job = get_current_job()
    return job.connection if job is not None else context.redis()


def deliver_items(
    context: RouteContext, redis: Redis, items: Sequence[dict[str, Any]]
) -> dict[str, int]:
    """Route and deliver a batch; returns counters (delivered, duplicates, deliveries, ...)."""
    router = context.router
    events = [item["e"] for item in items]
    try:
        decisions = router.route_batch(events)
    except Exception:  # one bad event must not sink the batch: retry one by one
        decisions = []
        for event in events:
            try:
                decisions.append(router.route(event))
            except Exception as exc:  # noqa: BLE001 - the reason is kept in the dead letter
                decisions.append(exc)  # type: ignore[arg-type]
    keys = context.keys
    batch: list[EventDelivery] = []
    routed: list[tuple[dict[str, Any], list[Delivery], dict[str, Any]]] = []
    failed: list[tuple[dict[str, Any], Exception]] = []
    for item, decision in zip(items, decisions, strict=True):
        event = item["e"]
        if isinstance(decision, Exception):
            failed.append((item, decision))
            continue
        batch.append(_outputs(context, event, decision, item.get("ing", "")))
        routed.append((event, decision, item))
    counters: Counter[str] = Counter()
    if batch:
        flags, now_s = context.deliverer(redis).deliver(batch)
    else:
        flags, now_s = [], time.time()
    pipe = redis.pipeline(transaction=False)
    # Emergency acknowledgement (jobs/emergency.py): record deadlines, schedule escalation.
    track_emergencies(pipe, context, routed, flags, now_s)
    latencies: dict[str, list[float]] = {}
    types: set[str] = set()
    for (event, decision, item), fresh in zip(routed, flags, strict=True):
        if not fresh:
            counters["duplicates"] += 1
            continue
        counters["delivered"] += 1
        types.add(event["type"])
        if not decision:
            counters["unrouted"] += 1
        for d in decision:
            counters[f"delivered:{d.dept}"] += 1
            counters["deliveries"] += 1
        ing = str(item.get("ing", ""))
        if ing:
            millis = int(ing.split("-", 1)[0])
            latencies.setdefault(event.get("priority", "routine"), []).append(now_s * 1000 - millis)
    for item, exc in failed:
        event = item["e"]
        dead_letter(
            pipe,
            keys,
            reason="unroutable",
            message=f"{type(exc).__name__}: {exc}",
            stage="route",
            dept=str(event.get("department", "")),
            entry_id=str(item.get("ing", "")),
            body=json.dumps(event),
        )
        counters["dead_lettered"] += 1
    for name, value in counters.items():
        if name.startswith("delivered:") or name in ("delivered", "duplicates", "unrouted"):
            pipe.hincrby(keys.stats, name, value)
    if types:
        pipe.sadd(keys.hot_types, *types)
    record_latencies(pipe, keys, latencies)
    pipe.execute()
    return dict(counters)


def _outputs(
    context: RouteContext, event: dict[str, Any], deliveries: list[Delivery], ing: str
) -> EventDelivery:
    keys = context.keys
    body = json.dumps(event, separators=(",", ":"))
    priority = event.get("priority", "routine")
    delivery = EventDelivery(seen_key=keys.seen(event["department"], event["id"]))
    for d in deliveries:
        via = context.via_json(d)
        delivery.outputs.append(
            Output(keys.inbox(d.dept), [("e", body), ("via", via), ("ing", ing), ("pri", priority)])
        )
    recipients = ",".join(d.dept for d in deliveries)
    delivery.outputs.append(
        Output(keys.hot(event["type"]), [("e", body), ("to", recipients), ("ing", ing)])
    )
    return delivery
