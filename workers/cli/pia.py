"""`cityrelay pia`: privacy impact assessments, the gate an integration passes to go live.

    cityrelay pia submit --file pia.yaml            # prints the risks found automatically
    cityrelay pia approve sdot/traffic.incident --reviewer dpo --for 180d [--accept CODE]
    cityrelay pia reject sdot/traffic.incident --reviewer dpo
    cityrelay pia show sdot/traffic.incident [--json] | pia list [--json]

The city's ``privacy:`` section is loaded by `workers.cli.privacy._privacy`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from city.config import CityConfig
from city.privacy import KeyRing, PrivacyConfig, PrivacyPolicy
from city.privacy.pia import Pia, PiaError, approve, effective_status, fingerprint, risks, submit
from jobs.privacy_stage import subscribers_of
from queues.pia import PiaStore
from workers.cli.policy import parse_duration as parse_span
from workers.cli.policy import parse_time
from workers.cli.privacy import _privacy
from workers.runtime import Runtime


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pia = subparsers.add_parser("pia", help="privacy impact assessments (the integration gate)")
    psub = pia.add_subparsers(dest="pia_command", metavar="ACTION", required=True)
    sub = psub.add_parser("submit", help="submit (or resubmit) a PIA from a YAML/JSON file")
    sub.add_argument("--file", required=True, type=Path)
    sub.set_defaults(func=cmd_pia_submit)
    app = psub.add_parser("approve", help="approve a submitted PIA")
    app.add_argument("integration", help="DEPT/TYPE")
    app.add_argument("--reviewer", required=True)
    when = app.add_mutually_exclusive_group(required=True)
    when.add_argument("--review-date", type=parse_time, help="ISO time the PIA must be reviewed")
    when.add_argument("--for", dest="span", type=parse_span, help="e.g. 180d")
    app.add_argument("--accept", action="append", default=[], help="accept a high risk by code")
    app.set_defaults(func=cmd_pia_approve)
    rej = psub.add_parser("reject", help="reject a PIA (its integration stays blocked)")
    rej.add_argument("integration")
    rej.add_argument("--reviewer", required=True)
    rej.set_defaults(func=cmd_pia_reject)
    show = psub.add_parser("show", help="one PIA, its effective status and risks")
    show.add_argument("integration")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_pia_show)
    lst = psub.add_parser("list", help="every PIA with its effective status")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_pia_list)


# ------------------------------------------------------------------------------- helpers


def _policy(city: CityConfig, base: Path, config: PrivacyConfig) -> PrivacyPolicy:
    return PrivacyPolicy(config, KeyRing.load(config.keys, base))


def _split(integration: str) -> str:
    if "/" not in integration:
        raise SystemExit(f"{integration!r}: name an integration as DEPT/TYPE")
    return integration


def _assess(city: CityConfig, policy: PrivacyPolicy, pia: Pia) -> tuple[str, list[Any]]:
    subs = subscribers_of(city).get(pia.type, {})
    return fingerprint(policy.config, pia.type, subs), risks(pia, policy, subs)


# ------------------------------------------------------------------------------- pia


def cmd_pia_submit(args: argparse.Namespace, runtime: Runtime) -> int:
    city, base, config = _privacy(runtime)
    try:
        doc = yaml.safe_load(args.file.read_text(encoding="utf-8"))
        new = Pia.model_validate(doc)
    except (OSError, yaml.YAMLError) as exc:
        print(f"pia submit: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            print(f"pia submit: {args.file}: {where}: {err['msg']}", file=sys.stderr)
        return 2
    if new.department not in city.department_ids:
        print(f"pia submit: no department {new.department!r}", file=sys.stderr)
        return 2
    store = PiaStore(runtime.redis(), runtime.keys)
    pia = submit(store.get(new.integration), new)
    store.put(pia)
    _, found = _assess(city, _policy(city, base, config), pia)
    print(f"submitted {pia.integration} (revision {pia.revision}): awaiting approval")
    for risk in found:
        print(f"  risk {risk}")
    return 0


def cmd_pia_approve(args: argparse.Namespace, runtime: Runtime) -> int:
    city, base, config = _privacy(runtime)
    store = PiaStore(runtime.redis(), runtime.keys)
    pia = store.get(_split(args.integration))
    if pia is None:
        print(f"pia approve: no PIA for {args.integration}", file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    review = args.review_date or now + args.span
    current, found = _assess(city, _policy(city, base, config), pia)
    try:
        approved = approve(
            pia, args.reviewer, review, current, found, args.accept, now, config.pia.max_review_days
        )
    except PiaError as exc:
        print(f"pia approve: refused: {exc}", file=sys.stderr)
        return 1
    store.put(approved)
    print(f"approved {pia.integration} until {review.isoformat()} by {args.reviewer}")
    return 0


def cmd_pia_reject(args: argparse.Namespace, runtime: Runtime) -> int:
    store = PiaStore(runtime.redis(), runtime.keys)
    pia = store.get(_split(args.integration))
    if pia is None:
        print(f"pia reject: no PIA for {args.integration}", file=sys.stderr)
        return 1
    store.put(pia.model_copy(update={"status": "rejected", "reviewer": args.reviewer}))
    print(f"rejected {pia.integration}")
    return 0


def cmd_pia_show(args: argparse.Namespace, runtime: Runtime) -> int:
    city, base, config = _privacy(runtime)
    pia = PiaStore(runtime.redis(), runtime.keys).get(_split(args.integration))
    if pia is None:
        print(f"pia show: no PIA for {args.integration}", file=sys.stderr)
        return 1
    current, found = _assess(city, _policy(city, base, config), pia)
    status = effective_status(pia, current, time.time())
    if args.json:
        out = {**pia.model_dump(mode="json"), "effective_status": status}
        out["risks"] = [
            {"code": r.code, "severity": r.severity, "message": r.message} for r in found
        ]
        print(json.dumps(out, indent=2))
        return 0
    print(f"{pia.integration}: {status} (stored: {pia.status}, revision {pia.revision})")
    print(f"  description: {pia.description}")
    print(f"  purposes: {', '.join(pia.purposes)}; lawful basis: {pia.lawful_basis}")
    print(f"  fields: {', '.join(f'{n}={c}' for n, c in pia.fields.items())}")
    print(f"  recipients: {', '.join(pia.recipients) or '-'}")
    print(f"  risks (declared): {'; '.join(pia.risks) or '-'}")
    print(f"  mitigations: {'; '.join(pia.mitigations) or '-'}")
    review = pia.review_date.isoformat() if pia.review_date else "-"
    print(f"  reviewer: {pia.reviewer or '-'}; review date: {review}")
    for risk in found:
        print(f"  risk {risk}")
    return 0


def cmd_pia_list(args: argparse.Namespace, runtime: Runtime) -> int:
    city, base, config = _privacy(runtime)
    policy = _policy(city, base, config)
    rows = []
    now = time.time()
    for integration, pia in sorted(PiaStore(runtime.redis(), runtime.keys).all().items()):
        current, found = _assess(city, policy, pia)
        rows.append(
            {
                "integration": integration,
                "status": effective_status(pia, current, now),
                "review_date": pia.review_date.isoformat() if pia.review_date else None,
                "risks": len(found),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(
                f"{row['integration']:45} {row['status']:10} review {row['review_date'] or '-'}"
                f"  risks {row['risks']}"
            )
    return 0
