"""What an escalation level says and to whom: the inboxes its notices go to, the event as they
show it (envelope and public text only), the subject and body, and the channels' results.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from jobs.channels import (
    Channel,
    Notification,
    notify,
)
from jobs.emergency.plan import ContactNotification, EscalationPlan
from queues.acks import EmergencyStatus
from queues.keys import Keys

# What a notice about someone else's emergency shows of the payload (levels 2-3 reach
# departments that never subscribed to it): the alert's public text, never personal fields.
NOTICE_FIELDS = ("headline", "event", "severity", "urgency", "certainty", "instruction",
                 "kind", "nature", "alarm", "road")  # fmt: skip
ENVELOPE_FIELDS = ("id", "type", "source", "specversion", "time", "subject", "priority",
                   "department", "location")  # fmt: skip


def notice_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event as escalation notices show it to other departments: the envelope and the
    public text (`NOTICE_FIELDS`); reminders too, since recipients' views may be narrower."""
    data: dict[str, Any] = event["data"] if isinstance(event.get("data"), dict) else {}
    shown = {k: event[k] for k in ENVELOPE_FIELDS if k in event}
    shown["data"] = {k: data[k] for k in NOTICE_FIELDS if k in data}
    return shown


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
