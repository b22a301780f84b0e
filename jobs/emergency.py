"""Emergency acknowledgement tracking and escalation.

The route job calls `track_emergencies` after its delivery script: every freshly delivered
emergency-priority event gets a tracking record (delivery time and, per recipient, the deadline
its ``escalation:`` config sets for the event's severity) and one scheduled `escalate` job per
distinct deadline, on the ``{prefix}.escalation`` RQ queue (JSON serializer; its workers run
RQ's scheduler, which enqueues the job when due).

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
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq import Queue

from city.config import CityConfig
from city.errors import ConfigError
from city.escalation import (
    DEFAULT_ESCALATION,
    EscalationConfig,
    parse_escalations,
    severity_of,
)
from city.routing import Delivery
from jobs.channels import (
    Channel,
    ChannelConfigError,
    Notification,
    build_channel,
    notify,
    parse_channels,
)
from jobs.context import RouteContext, get_context
from queues.acks import EMERGENCY, EmergencyStatus, EmergencyStore, track
from queues.audit import AuditLog
from queues.keys import Keys
from queues.metrics import record_counts
from queues.priority import ESCALATION, make_queue

# What a notice about someone else's emergency shows of the payload (levels 2-3 reach
# departments that never subscribed to it): the alert's public text, never personal fields.
NOTICE_FIELDS = ("headline", "event", "severity", "urgency", "certainty", "instruction",
                 "kind", "nature", "alarm", "road")  # fmt: skip
ENVELOPE_FIELDS = ("id", "type", "source", "specversion", "time", "subject", "priority",
                   "department", "location")  # fmt: skip
JOB_TIMEOUT_S = 600
log = logging.getLogger("cityrelay.emergency")
FAILURE_TTL_S = 7 * 24 * 3600
ACTOR = "escalation"


# --- the plan: validated config and built channels, once per process ----------------------


@dataclass(frozen=True)
class ContactNotification(Notification):
    """A notification to one contact about a department's unacknowledged emergency; its
    idempotency key names the contact, so two contacts behind one gateway are not merged."""

    contact: str = ""

    @property
    def idempotency_key(self) -> str:
        return f"{self.event_id}:{self.department}:{self.level}:{self.contact}"


@dataclass
class ContactPlan:
    name: str
    role: str
    department: str | None
    channels: list[Channel]


@dataclass
class EscalationPlan:
    """Every department's escalation settings and fallback channels, validated and built."""

    departments: list[str]
    escalations: dict[str, EscalationConfig]
    fallback: dict[str, list[Channel]]
    contacts: dict[str, list[ContactPlan]] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls,
        config: CityConfig,
        base_dir: Path | None = None,
        source: str | Path = "<config>",
        **channel_kwargs: Any,
    ) -> EscalationPlan:
        """Validate every ``fallback:`` and ``escalation:`` section; raises `ConfigError` with
        every problem, each with its path (``departments[3].fallback[0].url``...)."""
        escalations = parse_escalations({d.id: d.escalation for d in config.departments}, source)
        problems: list[tuple[str, str]] = []
        fallback: dict[str, list[Channel]] = {}
        contacts: dict[str, list[ContactPlan]] = {}

        def channels(raw: Any, where: str) -> list[Channel]:
            try:
                parsed = parse_channels(raw, where)
            except ChannelConfigError as exc:
                problems.extend(exc.problems)
                return []
            return [build_channel(c, base_dir=base_dir, **channel_kwargs) for c in parsed]

        for i, dept in enumerate(config.departments):
            fallback[dept.id] = channels(dept.fallback, f"departments[{i}].fallback")
            contacts[dept.id] = [
                ContactPlan(
                    c.name,
                    c.role,
                    c.department,
                    channels(c.channels, f"departments[{i}].escalation.chain[{j}].channels"),
                )
                for j, c in enumerate(escalations[dept.id].chain)
            ]
        if problems:
            raise ConfigError(source, problems)
        return cls(config.department_ids, escalations, fallback, contacts)

    def escalation(self, dept: str) -> EscalationConfig:
        return self.escalations.get(dept, DEFAULT_ESCALATION)


_plans: dict[int, tuple[CityConfig, EscalationPlan]] = {}


def plan_for(context: RouteContext) -> EscalationPlan:
    """The context's plan, built on first use (channels keep their circuit breakers).

    Config loading should have refused a bad section already; if one gets here anyway, the
    error is logged and every department gets the default deadlines and levels without
    channels: an emergency is always tracked and escalated through inboxes."""
    found = _plans.get(id(context))
    if found is None or found[0] is not context.config:
        try:
            plan = EscalationPlan.from_config(context.config, getattr(context, "base_dir", None))
        except ConfigError as exc:
            log.error("escalation config refused, using the defaults without channels:\n%s", exc)
            plan = EscalationPlan(context.config.department_ids, {}, {}, {})
        found = _plans[id(context)] = (context.config, plan)
    return found[1]


def use_plan(context: RouteContext, plan: EscalationPlan) -> None:
    """Install a plan built elsewhere (tests, or a process that built it at start-up)."""
    _plans[id(context)] = (context.config, plan)


# --- tracking: called by the route job ----------------------------------------------------


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
        check = Redis(connection_pool=pipe.connection_pool).pipeline(transaction=False)
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
    queue = _queue(Redis(connection_pool=pipe.connection_pool), context.keys)
    for deadline, group in groups.items():
        schedule(queue, context.keys, event_id, group, 1, deadline, pipeline=pipe)


def _queue(redis: Redis, keys: Keys) -> Queue:
    return make_queue(redis, keys, ESCALATION)


def job_id(keys: Keys, event_id: str, depts: Sequence[str], level: int, retry: str = "") -> str:
    """Deterministic (scheduling twice replaces, never doubles) and RQ-safe for any event id."""
    digest = hashlib.sha1(f"{event_id}|{','.join(sorted(depts))}".encode()).hexdigest()[:20]
    return f"{keys.prefix}-esc-{digest}-l{level}{retry}"


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


# --- escalation: the scheduled job --------------------------------------------------------


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


def notice_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event as escalation notices show it to other departments: the envelope and the
    public text (`NOTICE_FIELDS`); reminders too, since recipients' views may be narrower."""
    data: dict[str, Any] = event["data"] if isinstance(event.get("data"), dict) else {}
    shown = {k: event[k] for k in ENVELOPE_FIELDS if k in event}
    shown["data"] = {k: data[k] for k in NOTICE_FIELDS if k in data}
    return shown


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


def _notices(
    plan: EscalationPlan, keys: Keys, dept: str, level: int
) -> tuple[list[str], dict[str, Any]]:
    """The inboxes this level appends to, and the ``via`` those entries carry."""
    escalation = plan.escalation(dept)
    marker: dict[str, Any] = {"level": level, "for": dept}
    if level == 1:
        marker["kind"] = "reminder"
        targets = [dept]
    elif level == 2:
        marker["kind"] = "escalation"
        marker["contacts"] = [c.name for c in escalation.chain]
        targets = [c.department for c in escalation.chain if c.department is not None]
    else:
        marker["kind"] = "escalation"
        targets = [escalation.coordinator] if escalation.coordinator in plan.departments else []
        if escalation.broadcast_all:
            targets += plan.departments
    unique = [keys.inbox(d) for d in dict.fromkeys(targets)]
    return unique, {"escalation": marker, "subscriptions": [], "purposes": ["escalation"]}


def _text(status: EmergencyStatus, dept: str, level: int) -> tuple[str, str]:
    event = status.event
    data: dict[str, Any] = event["data"] if isinstance(event.get("data"), dict) else {}
    headline = data.get("headline") or data.get("event") or event.get("type")
    deadline = status.recipients[dept].deadline_ms
    subject = f"Emergency not acknowledged by {dept} (level {level}): {headline}"
    body = (
        f"Event {event.get('id')} ({event.get('type')}, severity {status.severity}) was "
        f"delivered to {dept} and not acknowledged by its deadline "
        f"{_iso(deadline)}.\n"
        f"Acknowledge: cityrelay ack {event.get('id')} --dept {dept}"
    )
    return subject, body


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _send(
    plan: EscalationPlan, status: EmergencyStatus, dept: str, level: int
) -> list[dict[str, Any]]:
    """Try this level's channels; every result (ok or not) is returned for the audit."""
    subject, body = _text(status, dept, level)
    deadline = _iso(status.recipients[dept].deadline_ms)
    common: dict[str, Any] = {
        "event_id": status.event_id, "department": dept, "subject": subject, "body": body,
        "level": level, "deadline": deadline, "event": notice_event(status.event),
    }  # fmt: skip
    attempts: list[tuple[str, list[Channel], Notification]] = []
    if level == 1:
        attempts.append((dept, plan.fallback.get(dept, []), Notification(**common)))
    elif level == 2:
        for contact in plan.contacts.get(dept, []):
            note = ContactNotification(**common, contact=contact.name)
            attempts.append((f"{contact.role}:{contact.name}", contact.channels, note))
    else:
        coordinator = plan.escalation(dept).coordinator
        note = ContactNotification(**common, contact=coordinator)
        attempts.append((coordinator, plan.fallback.get(coordinator, []), note))
    sends: list[dict[str, Any]] = []
    for who, channels, notification in attempts:
        outcome = notify(channels, notification)
        sends += [{"to": who, **asdict(r)} for r in outcome.results]
    return sends
