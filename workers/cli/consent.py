"""`cityrelay consent`: a citizen's consent per purpose, given, withdrawn and shown.

    cityrelay consent give|withdraw --kind plate --subject ABC123 --purpose trip-alerts
    cityrelay consent show --kind plate --subject ABC123

Redis names the citizen by the keyed consent id (`city.privacy.consent_id`), made with the
consent key that `cityrelay privacy keys --ensure` creates.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from city.privacy import PERSONAL, KeyRing, PrivacyConfig, consent_id
from city.privacy.consent import receipt, status_of
from queues.consent import ConsentRegistry
from workers.cli.privacy import _privacy
from workers.runtime import Runtime


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    consent = subparsers.add_parser("consent", help="citizens' consent: give, withdraw, show")
    csub = consent.add_subparsers(dest="consent_command", metavar="ACTION", required=True)
    for action in ("give", "withdraw"):
        c = csub.add_parser(action, help=f"{action} consent for a purpose (prints the receipt)")
        c.add_argument("--kind", required=True, help="identifier kind, e.g. plate, phone")
        c.add_argument("--subject", required=True, help="the citizen's identifier")
        c.add_argument("--purpose", required=True)
        c.add_argument("--type", help="event type the consent concerns (for the receipt)")
        c.set_defaults(func=cmd_consent_change, state="given" if action == "give" else "withdrawn")
    cshow = csub.add_parser("show", help="a citizen's consent per purpose")
    cshow.add_argument("--kind", required=True)
    cshow.add_argument("--subject", required=True)
    cshow.set_defaults(func=cmd_consent_show)


# ------------------------------------------------------------------------------- consent


def _subject(runtime: Runtime, kind: str, value: str) -> tuple[PrivacyConfig, str]:
    _, base, config = _privacy(runtime)
    ring = KeyRing.load(config.keys, base)
    if ring.consent is None:
        raise SystemExit("no consent key: run `cityrelay privacy keys --ensure` first")
    return config, consent_id(ring.consent, kind, value)


def cmd_consent_change(args: argparse.Namespace, runtime: Runtime) -> int:
    config, cid = _subject(runtime, args.kind, args.subject)
    tp = config.types.get(args.type) if args.type else None
    categories = sorted(n for n, c in tp.fields.items() if c in PERSONAL) if tp else [args.kind]
    sensitive = bool(tp and "sensitive" in tp.fields.values())

    def make(record: Any) -> dict[str, Any]:
        return receipt(
            record, config.controller, args.type or "city services", categories, sensitive
        )

    record = ConsentRegistry(runtime.redis(), runtime.keys).set(
        cid, args.purpose, args.state, config.consent_days, receipt=make
    )
    print(json.dumps(make(record), indent=2))
    return 0


def cmd_consent_show(args: argparse.Namespace, runtime: Runtime) -> int:
    _, cid = _subject(runtime, args.kind, args.subject)
    records = ConsentRegistry(runtime.redis(), runtime.keys).get(cid)
    now = time.time()
    print(
        json.dumps({"subject": cid, "purposes": {p: status_of(records, p, now) for p in records}})
    )
    return 0
