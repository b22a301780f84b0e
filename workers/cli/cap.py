"""`cityrelay cap parse FILE` and `cityrelay cap render EVENT_JSON_FILE`.

``parse`` prints the events a CAP 1.2 alert becomes, one JSON object per line (the wire form
ingest accepts); nothing is published. ``render`` prints one event as a CAP 1.2 alert for
public warning systems. ``-`` reads standard input, so the two compose::

    cityrelay cap parse alert.xml | head -1 | cityrelay cap render -

Each event carries the alert's ``signature`` result (valid | invalid | unverified | absent),
checked against the certificates of ``--trust`` or else of the city config's ``cap:`` section;
the reason (which certificate, what failed) goes to standard error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from city.cap import (
    NO_TRUST,
    CapError,
    CapTrust,
    event_to_cap,
    events_and_signature,
    load_certificates,
    trust_from_config,
)
from city.errors import ConfigError
from city.events import Event
from workers.runtime import Runtime


def register(subparsers: Any) -> None:
    cap = subparsers.add_parser("cap", help="CAP 1.2 alerts: parse into events, render as CAP")
    actions = cap.add_subparsers(dest="cap_action", metavar="ACTION", required=True)
    parse = actions.add_parser("parse", help="print the events a CAP alert becomes (JSON lines)")
    parse.add_argument("file", help="CAP 1.2 XML file, or - for standard input")
    parse.add_argument("--department", help="publishing department (sets source/department)")
    parse.add_argument(
        "--trust",
        action="append",
        metavar="CERT.pem",
        help="a trusted signing certificate (repeatable; default: the city config's"
        " cap.trusted_certificates)",
    )
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


def _trust(args: argparse.Namespace, runtime: Runtime) -> CapTrust:
    """--trust files, else the city config's ``cap:`` section (with its require_signature)."""
    config = runtime.city()[0] if runtime.config_path is not None else None
    require = config.cap.require_signature if config is not None else False
    if args.trust:
        return CapTrust(load_certificates(args.trust, None, "--trust"), require)
    return trust_from_config(config.cap) if config is not None else NO_TRUST


def parse_command(args: argparse.Namespace, runtime: Runtime) -> int:
    try:
        trust = _trust(args, runtime)
        xml = _read(args.file)
        events, signature = events_and_signature(xml, args.department, trust)
    except ConfigError as exc:
        print(f"cap parse: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cap parse: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except CapError as exc:
        print(f"cap parse: {args.file}: {exc}", file=sys.stderr)
        return 1
    # The events carry the result; the why (signer, what failed) is for the person reading.
    print(f"cap parse: {args.file}: signature {signature.describe()}", file=sys.stderr)
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
