"""The route job: one micro-batch (or one emergency event) from ingest to department inboxes.

geo + subscriptions + sharing decision (the core `Router`, with the grants in force) -> one view
per recipient entitlement -> one atomic, idempotent Lua delivery (inboxes + hot tier + dedupe
marker) -> counters and one hash-chained audit record for the batch (every decision, allowed or
denied, with the policy, grant and purpose). The job is thin: the decisions live in `city/`,
the Redis writes in `queues/`.

An event the router cannot handle (for example a self-intersecting area) is dead-lettered with
the reason; it never fails the rest of its batch. The job's own timeout is no event's fault: it
fails the job (which RQ retries), never routes the batch again one by one without a deadline
(RQ's alarm fires once) nor dead-letters the event it interrupted.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from redis import Redis
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from city.audit import delivery_body
from city.routing import Routed
from city.sharing import view
from jobs.context import RouteContext, get_context
from jobs.emergency import track_emergencies
from jobs.privacy_stage import Prepared
from jobs.shapes import Send, Shape
from jobs.views import split_on_data, view_json
from queues.inbox import AuditFrame, EventDelivery, Output
from queues.metrics import record_counts, record_latencies
from queues.streams import dead_letter
from queues.trace import enabled as tracing
from queues.trace import now_ms
from queues.trace import record as trace


def route_batch(items: list[dict[str, Any]], prefix: str | None = None) -> dict[str, int]:
    """RQ entry point. `items` are ``{"e": wire event, "ing": ingest entry id}``."""
    run_ms = now_ms()
    context = get_context(prefix)
    job = get_current_job()
    # Emergency jobs leave chaining the audit records to routine and archive jobs: every round
    # trip counts on the emergency path, and the records are already safe in the audit inbox.
    chain = any(item["e"].get("priority") != "emergency" for item in items)
    stamps = None
    if not chain and tracing():  # per-hop timestamps (queues/trace.py)
        popped = getattr(job, "popped_at", None)  # set by workers/worker.py's dequeue
        stamps = {"run": run_ms, "popped": popped * 1000 if popped else run_ms}
    if job is None:
        return deliver_items(context, context.redis(), items, chain_audit=chain, stamps=stamps)
    return deliver_items(
        context, job.connection, items, batch_id=job.id, chain_audit=chain, stamps=stamps
    )


def deliver_items(
    context: RouteContext,
    redis: Redis,
    items: Sequence[dict[str, Any]],
    batch_id: str = "",
    chain_audit: bool = True,
    stamps: dict[str, float] | None = None,
) -> dict[str, int]:
    """Route and deliver a batch; returns counters (delivered, duplicates, deliveries, ...).
    With `stamps`, each event's per-hop timestamps go to the trace stream (queues/trace.py)."""
    router = context.router
    # After the batch was read (see queues/jurisdictions.py): the versions in force now.
    # Control data (one shard of a partitioned city; see queues/partition.py).
    control = context.control_redis(redis)
    authorizer, grant_version, world = context.state(control)
    now = time.time()
    counters: Counter[str] = Counter()
    keys = context.keys
    stage = context.privacy
    if stage.enabled:
        # The PIA gate: an integration without an approved assessment is never routed.
        gate = control.pipeline(transaction=False)
        admitted, held = stage.admit(control, [item["e"] for item in items], gate, now)
        if held:
            gate.execute()
            counters["quarantined"] += len(held)
            admitted_ids = {id(event) for event in admitted}
            items = [item for item in items if id(item["e"]) in admitted_ids]
    events = [item["e"] for item in items]
    prepared = stage.prepare(control, events, now)
    outcomes: list[Routed | Exception]
    try:
        outcomes = list(router.route_batch(events, authorizer, now, world))
    except JobTimeoutException:  # the job's own deadline (an Exception too): RQ retries it
        raise
    except Exception:  # one bad event must not sink the batch: retry one by one
        outcomes = []
        for event in events:
            try:
                outcomes.append(router.route_batch([event], authorizer, now, world)[0])
            except JobTimeoutException:  # never an event's fault: not a dead letter
                raise
            except Exception as exc:  # noqa: BLE001 - the reason is kept in the dead letter
                outcomes.append(exc)
    batch: list[EventDelivery] = []
    routed: list[tuple[dict[str, Any], Routed, dict[str, Any]]] = []
    failed: list[tuple[dict[str, Any], Exception]] = []
    versions_used: set[str] = set()
    shapes: dict[tuple[int, str], Shape] = {}  # per (outcome, priority): see `Shape`
    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, Exception):
            failed.append((item, outcome))
            continue
        event = item["e"]
        priority = event.get("priority", "routine")
        shape = shapes.get((id(outcome), priority))
        if shape is None:
            shape = shapes[(id(outcome), priority)] = Shape.of(context, outcome, priority)
            versions_used.add(shape.versions)
        batch.append(_outputs(context, prepared, event, outcome, shape, item.get("ing", "")))
        routed.append((event, outcome, item))
    if batch:
        # Every decision of the events delivered now is recorded in the same atomic step.
        frame = _audit_frame(
            context,
            batch_id or str(items[0].get("ing", "")),
            grant_version,
            ";".join(sorted(versions_used - {""})) or "none",
        )
        if stamps is not None:
            stamps["ds"] = now_ms()
        result = context.deliverer(redis).deliver(batch, frame)
        flags, now_s, backlogs = result.flags, result.now, result.backlogs
        if stamps is not None:
            stamps.update(de=round(now_s * 1000, 3), back=now_ms())
    else:
        flags, now_s, backlogs = [], now, []
    pipe = redis.pipeline(transaction=False)
    # Emergency acknowledgement (jobs/emergency/): deadlines for the departments that
    # actually received each emergency (not those its privacy rule withheld it from).
    received = [
        (event, delivery.received, item)
        for (event, _, item), delivery in zip(routed, batch, strict=True)
    ]
    tracked = track_emergencies(pipe, context, received, flags, now_s)
    by_priority: Counter[str] = Counter({"emergency:tracked": tracked})
    latencies: dict[str, list[float]] = {}
    types: set[str] = set()
    for (event, _, item), delivery, fresh in zip(routed, batch, flags, strict=True):
        if not fresh:
            counters["duplicates"] += 1
            continue
        counters.update(delivery.tally)
        types.add(event["type"])
        ing = str(item.get("ing", ""))
        if ing:
            millis = int(ing.split("-", 1)[0])
            latencies.setdefault(event.get("priority", "routine"), []).append(now_s * 1000 - millis)
    for item, error in failed:
        event = item["e"]
        dead_letter(
            pipe,
            keys,
            reason="unroutable",
            message=f"{type(error).__name__}: {error}",
            stage="route",
            dept=str(event.get("department", "")),
            entry_id=str(item.get("ing", "")),
            body=json.dumps(event),
        )
        counters["dead_lettered"] += 1
    # What the delivered events count went with them in the delivery script (`_counts`).
    record_counts(pipe, keys, {name: counters[name] for name in ("duplicates", "quarantined")})
    record_counts(pipe, keys, by_priority)
    if types:
        pipe.sadd(keys.hot_types, *types)
    record_latencies(pipe, keys, latencies)
    context.inbox_alarms.count(pipe, backlogs)
    if stamps is not None and batch:
        for item in items:
            trace(pipe, keys, "route", str(item.get("ing", "")), stamps)
    pipe.execute()
    if backlogs:  # an inbox near its bound: a department that stopped consuming
        context.inbox_alarms.raise_alarms(redis, backlogs)
    if chain_audit:
        context.audit(redis).drain_inbox()  # chain the recorded decisions (one worker at a time)
    if counters["delivered"]:  # present (0) whenever events were delivered, as callers read
        for name in ("derived", "denied"):
            counters.setdefault(name, 0)
    return dict(counters)


def _audit_frame(
    context: RouteContext, batch_id: str, grant_version: Any, versions: str
) -> AuditFrame:
    """The delivery record body around the rows the delivery script fills in."""
    body = delivery_body(batch_id, [], context.router.policies.version, grant_version, versions)
    text = orjson.dumps(body).decode()
    head, tail = text.split('"rows":[]', 1)
    return AuditFrame(context.keys.audit_inbox, head + '"rows":[', "]" + tail)


def _derived_outputs(context: RouteContext, event: dict[str, Any]) -> list[Output]:
    """The events the city's rules derive from `event`, as appends to the issuing departments'
    ingest streams (plus a dead letter for a rule that could not apply). They travel in the
    event's own atomic delivery, so a crash cannot deliver the event and lose its derivations;
    there they are validated, routed and authorized like any other event."""
    derivation = context.router.rules.derive(event)
    outputs = []
    for derived in derivation.events:
        lane = "emergency" if derived.get("priority") == "emergency" else "routine"
        body = json.dumps(derived, separators=(",", ":"))
        issuer = derived["department"]  # its ingest stream is on its home shard
        key = context.keys.ingest(issuer, lane)
        outputs.append(context.placement.output(issuer, key, [("e", body)], lane))
    for problem in derivation.problems:
        fields: list[tuple[str, str | bytes]] = [
            ("reason", "rule_failed"), ("message", problem), ("stage", "rules"),
            ("dept", str(event.get("department", ""))), ("body", json.dumps(event)),
        ]  # fmt: skip
        outputs.append(Output(context.keys.deadletter, fields))
    return outputs


def _outputs(
    context: RouteContext,
    prepared: Prepared,
    event: dict[str, Any],
    outcome: Routed,
    shape: Shape,
    ing: str,
) -> EventDelivery:
    """Everything one event writes: each recipient's view, derived events, the hot tier."""
    keys = context.keys
    priority = shape.priority
    delivery = EventDelivery(seen_key=keys.seen(event["department"], event["id"]))
    outputs = delivery.outputs
    parts = split_on_data(event)  # the event's JSON around its data, encoded once
    event_id = orjson.dumps(event["id"]).decode()
    if prepared.policy is None:  # no privacy section: the policy's field selection is the view
        views: dict[tuple[object, ...], str] = {}
        for send in shape.sends:
            body = views.get(send.entitlement)
            if body is None:
                body = views[send.entitlement] = (
                    orjson.dumps(view(event, send.decision)).decode()
                    if parts is None
                    else view_json(event, parts, send.decision)
                )
            outputs.append(_inbox_output(send, body, ing, priority))
        delivery.audit_rows = ",".join(["[" + event_id + tail for tail in shape.row_tails])
        counts, tally, received, recipients = (
            shape.counts,
            shape.tally,
            shape.received,
            shape.recipients,
        )
    else:
        notes: dict[tuple[str, str], Any] = {}
        withheld: set[tuple[str, str]] = set()
        for send in shape.sends:
            shown, note = prepared.view_note(event, send.dept, send.decision)
            notes[(send.dept, send.purpose)] = note.audit()
            if shown is None:  # withheld (no consent, per the privacy rule)
                withheld.add((send.dept, send.purpose))
                continue
            outputs.append(_inbox_output(send, orjson.dumps(shown).decode(), ing, priority))
        rows = [
            [
                *decision.audit_row(event["id"], dept, sub_id),
                notes.get((dept, decision.purpose)) if decision.allow else None,
            ]
            for dept, sub_id, decision in outcome.decisions
        ]
        delivery.audit_rows = orjson.dumps(rows).decode()[1:-1]
        counts, tally, received, recipients = (
            shape.withholding(outcome, withheld)
            if withheld
            else (shape.counts, shape.tally, shape.received, shape.recipients)
        )
    derived = (
        _derived_outputs(context, event) if context.router.rules.for_type(event["type"]) else []
    )
    if derived:
        outputs.extend(derived)
        made = sum(1 for out in derived if out.key != keys.deadletter)
        counts = (*counts, *("derived",) * made)
        tally = (*tally, *("derived",) * made)
    delivery.counts, delivery.tally, delivery.received = counts, tally, received
    full = orjson.dumps(event).decode() if parts is None else "".join(parts) + "}"
    # The hot tier, in the format queues/hot.py reads and the archive moves to S3.
    outputs.append(Output.flat(keys.hot(event["type"]), ["e", full, "to", recipients, "ing", ing]))
    return delivery


def _inbox_output(send: Send, body: str, ing: str, priority: str) -> Output:
    """The append of one recipient's view to its inbox (or this shard's outbox towards it)."""
    return Output.flat(
        send.key, [*send.head, "e", body, "via", send.via, "ing", ing, "pri", priority]
    )
