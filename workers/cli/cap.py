"""`cityrelay cap parse FILE` and `cityrelay cap render EVENT_JSON_FILE`.

``parse`` prints the events a CAP 1.2 alert becomes, one JSON object per line (the wire form
ingest accepts); nothing is published. ``render`` prints one event as a CAP 1.2 alert for
public warning systems. ``-`` reads standard input, so the two compose::

    cityrelay cap parse alert.xml | head -1 | cityrelay cap render -
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from city.cap import CapError, event_to_cap, events_from_cap
from city.events import Event
from workers.runtime import Runtime


def register(subparsers: Any) -> None:
    cap = subparsers.add_parser("cap", help="CAP 1.2 alerts: parse into events, render as CAP")
    actions = cap.add_subparsers(dest="cap_action", metavar="ACTION", required=True)
    parse = actions.add_parser("parse", help="print the events a CAP alert becomes (JSON lines)")
    parse.add_argument("file", help="CAP 1.2 XML file, or - for standard input")
    parse.add_argument("--department", help="publishing department (sets source/department)")
    parse.set_defaults(func=parse_command)
    render = actions.add_parser("render", help="print one event (JSON) as a CAP 1.2 alert")
    render.add_argument("event_file", help="a JSON file holding one event, or - for stdin")
    render.add_argument("--sender", help="CAP sender (default: the alert's own, or the city)")
    render.add_argument(
        "--status", default="Actual", choices=["Actual", "Exercise", "System", "Test", "Draft"]
    )
    render.add_argument("--scope", default="Public", choices=["Public", "Restricted"])
    render.set_defaults(func=render_command)


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    return Path(name).read_bytes()


def parse_command(args: argparse.Namespace, runtime: Runtime) -> int:
    try:
        events = events_from_cap(_read(args.file), department=args.department)
    except OSError as exc:
        print(f"cap parse: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except CapError as exc:
        print(f"cap parse: {args.file}: {exc}", file=sys.stderr)
        return 1
    for event in events:
        print(json.dumps(event.to_wire(), ensure_ascii=False))
    return 0


def render_command(args: argparse.Namespace, runtime: Runtime) -> int:
    try:
        text = _read(args.event_file).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"cap render: cannot read {args.event_file}: {exc}", file=sys.stderr)
        return 1
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        raw = json.loads(text) if len(lines) != 1 else json.loads(lines[0])
        if not isinstance(raw, dict):
            raise ValueError("expected one JSON object (an event)")
        event = Event.model_validate(raw)
        print(event_to_cap(event, sender=args.sender, status=args.status, scope=args.scope))
    except (ValueError, ValidationError) as exc:  # JSONDecodeError, CapError are ValueErrors
        print(f"cap render: {args.event_file}: {exc}", file=sys.stderr)
        return 1
    return 0
