"""CLI: `cityrelay ack`, `cityrelay emergency status|list`, and `publish --cap` (see cli/pipeline).

cityrelay ack EVENT --dept fire [--by "Capt. Ortiz"]
cityrelay emergency status EVENT [--json]
cityrelay emergency list [--count 20]
cityrelay publish --dept oem --cap alert.xml [--dry-run] [--raw]
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from city.cap import CapError, alert_priority, events_from_cap
from city.events import Priority
from queues.acks import EmergencyStore, acknowledge
from queues.streams import Producer
from workers.runtime import Runtime


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("ack", help="acknowledge an emergency for a department")
    p.add_argument("event", help="the emergency's event id")
    p.add_argument("--dept", required=True, help="the acknowledging department")
    p.add_argument("--by", help="who acknowledges (default: the login name)")
    p.set_defaults(func=cmd_ack)

    em = subparsers.add_parser("emergency", help="emergency acknowledgement and escalation")
    actions = em.add_subparsers(dest="emergency_action", metavar="ACTION", required=True)
    p = actions.add_parser("status", help="per department: delivered, acknowledged, escalated")
    p.add_argument("event", help="the emergency's event id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = actions.add_parser("list", help="the most recent tracked emergencies")
    p.add_argument("--count", type=int, default=20)
    p.set_defaults(func=cmd_list)


def cmd_ack(args: argparse.Namespace, runtime: Runtime) -> int:
    by = f"cli:{args.by or getpass.getuser()}"
    (result,) = acknowledge(runtime.redis(), runtime.keys, [args.event], args.dept, by)
    print(json.dumps({"event": result.event_id, "dept": result.dept, "outcome": result.outcome,
                      "at": _iso(result.at_ms) if result.at_ms else None}))  # fmt: skip
    if result.outcome == "untracked":
        print(f"ack: no tracked emergency {args.event!r} (unknown, or its record expired)",
              file=sys.stderr)  # fmt: skip
    elif result.outcome == "not_recipient":
        print(f"ack: {args.dept!r} did not receive emergency {args.event!r}", file=sys.stderr)
    return 0 if result.ok else 1


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def cmd_status(args: argparse.Namespace, runtime: Runtime) -> int:
    status = EmergencyStore(runtime.redis(), runtime.keys).status(args.event)
    if status is None:
        print(f"emergency status: no tracked emergency {args.event!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status.to_json()))
        return 0
    event = status.event
    print(f"{status.event_id}  {event.get('type')}  severity {status.severity}")
    print(f"{'department':24s} {'state':22s} {'delivered':30s} {'deadline':30s} acknowledged")
    for dept, r in status.recipients.items():
        acked = f"{_iso(r.acked_ms)} by {r.ack_by}" if r.acked_ms is not None else "-"
        print(f"{dept:24s} {r.state:22s} {_iso(r.delivered_ms):30s} {_iso(r.deadline_ms):30s} "
              f"{acked}")  # fmt: skip
        for n, level in sorted(r.levels.items()):
            result = level.result or {}
            channels = ", ".join(
                f"{c['channel']}:{'ok' if c['ok'] else 'failed'}"
                for c in result.get("channels", [])
            )
            notices = ", ".join(result.get("notices", []))
            print(f"    level {n} at {_iso(level.at_ms)}: {result.get('kind', '?')}; "
                  f"inboxes [{notices}]; channels [{channels}]")  # fmt: skip
        if r.stopped_at_level is not None:
            print(f"    escalation stopped before level {r.stopped_at_level}: acknowledged")
    return 0


def cmd_list(args: argparse.Namespace, runtime: Runtime) -> int:
    store = EmergencyStore(runtime.redis(), runtime.keys)
    for event_id, delivered_ms in store.recent(args.count):
        status = store.status(event_id)
        if status is None:  # record expired; the index entry outlived it
            continue
        acked = sum(1 for r in status.recipients.values() if r.acked_ms is not None)
        escalated = sum(1 for r in status.recipients.values() if r.level)
        print(json.dumps({"event": event_id, "type": status.event.get("type"),
                          "delivered": _iso(delivered_ms), "recipients": len(status.recipients),
                          "acknowledged": acked, "escalated": escalated}))  # fmt: skip
    return 0


# -- publish --cap (the `publish` parser lives in cli/pipeline.py) --------------------------
def publish_cap(args: argparse.Namespace, runtime: Runtime) -> int:
    """Publish the events a CAP alert becomes, or with --dry-run print them (JSON lines)."""
    try:
        xml = sys.stdin.buffer.read() if args.cap == "-" else Path(args.cap).read_bytes()
        if getattr(args, "raw", False):
            return _publish_raw_cap(args, runtime, xml)
        events = events_from_cap(xml, department=args.dept)
    except OSError as exc:
        print(f"publish: cannot read {args.cap}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except CapError as exc:
        print(f"publish: {args.cap} is not a valid CAP 1.2 alert: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        for event in events:
            print(json.dumps(event.to_wire(), ensure_ascii=False))
        return 0
    ids = Producer(runtime.redis(), args.dept, runtime.keys).publish_many(events)
    for event, event_id in zip(events, ids, strict=True):
        print(json.dumps({"id": event_id, "type": event.type, "priority": str(event.priority)}))
    return 0


def _publish_raw_cap(args: argparse.Namespace, runtime: Runtime, xml: bytes) -> int:
    """--raw: send the XML as it is, the way a feed bridge does; ingest parses it and routes
    its events or dead-letters it (`cityrelay deadletters` shows why). --dry-run prints the
    lane and the events ingest would make, without sending."""
    priority = alert_priority(xml)
    lane = "emergency" if priority == Priority.EMERGENCY else "routine"
    if args.dry_run:
        events = events_from_cap(xml, department=args.dept)  # CapError: reported by the caller
        print(json.dumps({"lane": lane, "bytes": len(xml), "events": [e.id for e in events]}))
        return 0
    entry = Producer(runtime.redis(), args.dept, runtime.keys).publish_cap(xml, lane=lane)
    print(json.dumps({"entry": entry, "lane": lane, "bytes": len(xml)}))
    return 0
