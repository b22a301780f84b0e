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
from jobs.context import RouteContext, get_context, where_key
from jobs.emergency import track_emergencies
from jobs.privacy_stage import Prepared
from jobs.views import split_on_data, view_json
from queues.inbox import AuditFrame, EventDelivery, Output
from queues.metrics import delivered_key, record_counts, record_latencies
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
    delivery_of: dict[int, EventDelivery] = {}
    versions_used: set[str] = set()
    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, Exception):
            failed.append((item, outcome))
            continue
        event = item["e"]
        delivery = _outputs(context, prepared, event, outcome, item.get("ing", ""))
        rows = [
            [
                *decision.audit_row(event["id"], dept, sub_id),
                delivery.notes.get((dept, decision.purpose)) if decision.allow else None,
            ]
            for dept, sub_id, decision in outcome.decisions
        ]
        delivery.audit_rows = orjson.dumps(rows).decode()[1:-1]
        delivery.counts = _counts(event, outcome, delivery)
        if outcome.where is not None:
            versions_used.add(",".join(f"{k}:{v}" for k, v in sorted(outcome.versions.items())))
        batch.append(delivery)
        delivery_of[id(event)] = delivery
        routed.append((event, outcome, item))
    if batch:
        # Every decision of the events delivered now is recorded in the same atomic step.
        frame = _audit_frame(
            context,
            batch_id or str(items[0].get("ing", "")),
            grant_version,
            ";".join(sorted(versions_used)) or "none",
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
        (event, _received_by(context, outcome, delivery_of[id(event)]), item)
        for event, outcome, item in routed
    ]
    tracked = track_emergencies(pipe, context, received, flags, now_s)
    by_priority: Counter[str] = Counter({"emergency:tracked": tracked})
    latencies: dict[str, list[float]] = {}
    types: set[str] = set()
    for (event, outcome, item), fresh in zip(routed, flags, strict=True):
        if not fresh:
            counters["duplicates"] += 1
            continue
        counters["delivered"] += 1
        counters["derived"] += delivery_of[id(event)].derived
        types.add(event["type"])
        if not outcome.deliveries:
            counters["unrouted"] += 1
        withheld = delivery_of[id(event)].withheld
        for d in outcome.deliveries:
            if (d.dept, d.purpose) in withheld:
                counters["withheld"] += 1
                continue
            counters[f"delivered:{d.dept}"] += 1
            counters["deliveries"] += 1
        counters["denied"] += sum(1 for _, _, decision in outcome.decisions if not decision.allow)
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
    return dict(counters)


def _audit_frame(
    context: RouteContext, batch_id: str, grant_version: Any, versions: str
) -> AuditFrame:
    """The delivery record body around the rows the delivery script fills in."""
    body = delivery_body(batch_id, [], context.router.policies.version, grant_version, versions)
    text = orjson.dumps(body).decode()
    head, tail = text.split('"rows":[]', 1)
    return AuditFrame(context.keys.audit_inbox, head + '"rows":[', "]" + tail)


def _counts(event: dict[str, Any], outcome: Routed, delivery: EventDelivery) -> list[str]:
    """The stats fields this event adds to if it is delivered now (once each, repeats add)."""
    priority = event.get("priority", "routine")
    counts = ["delivered", *["derived"] * delivery.derived]
    if not outcome.deliveries:
        counts.append("unrouted")
    for d in outcome.deliveries:
        if (d.dept, d.purpose) in delivery.withheld:
            counts.append("withheld")
        else:
            counts += [f"delivered:{d.dept}", delivered_key(d.dept, priority)]
    counts += ["denied"] * sum(1 for _, _, decision in outcome.decisions if not decision.allow)
    return counts


def _received_by(context: RouteContext, outcome: Routed, delivery: EventDelivery) -> list[str]:
    """Recipients tracked here: those the privacy rule did not withhold it from and, in a
    partitioned city, at home on this shard (the relay tracks the others on theirs)."""
    return [
        d.dept
        for d in outcome.deliveries
        if (d.dept, d.purpose) not in delivery.withheld
        and context.placement.remote_home(d.dept) is None
    ]


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
    context: RouteContext, prepared: Prepared, event: dict[str, Any], routed: Routed, ing: str
) -> EventDelivery:
    keys = context.keys
    priority = event.get("priority", "routine")
    delivery = EventDelivery(seen_key=keys.seen(event["department"], event["id"]))
    deliveries = routed.deliveries
    where = where_key(routed)
    views: dict[tuple[object, ...], str] = {}  # recipients with the same entitlement share a view
    parts = split_on_data(event)  # the event's JSON around its data, encoded once
    for d in deliveries:
        decision = d.decision
        if prepared.policy is None:  # no privacy section: the policy's field selection is the view
            entitlement = (
                decision.fields,
                decision.redact,
                d.purpose,
                decision.break_glass,
                decision.grant,
            )
            body = views.get(entitlement)
            if body is None:
                body = views[entitlement] = (
                    orjson.dumps(view(event, decision)).decode()
                    if parts is None
                    else view_json(event, parts, decision)
                )
        else:
            shown, note = prepared.view_note(event, d.dept, decision)
            delivery.notes[(d.dept, d.purpose)] = note.audit()
            if shown is None:  # withheld (no consent, per the privacy rule)
                delivery.withheld.add((d.dept, d.purpose))
                continue
            body = orjson.dumps(shown).decode()
        # A recipient at home on another shard: its shard's outbox, same script (placement).
        delivery.outputs.append(
            context.placement.output(
                d.dept,
                keys.inbox(d.dept),
                [
                    ("e", body),
                    ("via", context.via_json(d, where)),
                    ("ing", ing),
                    ("pri", priority),
                ],
                "emergency" if priority == "emergency" else "routine",
            )
        )
    derived = _derived_outputs(context, event)
    delivery.outputs.extend(derived)
    delivery.derived = sum(1 for out in derived if out.key != keys.deadletter)
    recipients = ",".join(
        d.dept for d in deliveries if (d.dept, d.purpose) not in delivery.withheld
    )
    full = orjson.dumps(event).decode() if parts is None else "".join(parts) + "}"
    # The hot tier, in the format queues/hot.py reads and the archive moves to S3.
    delivery.outputs.append(
        Output(keys.hot(event["type"]), [("e", full), ("to", recipients), ("ing", ing)])
    )
    return delivery
