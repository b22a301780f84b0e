"""`cityrelay pia|consent|opendata|privacy`: privacy impact assessments, consent, open data.

    cityrelay pia submit --file pia.yaml            # prints the risks found automatically
    cityrelay pia approve sdot/traffic.incident --reviewer dpo --for 180d [--accept CODE]
    cityrelay pia reject sdot/traffic.incident --reviewer dpo
    cityrelay pia show sdot/traffic.incident [--json] | pia list [--json]
    cityrelay consent give|withdraw --kind plate --subject ABC123 --purpose trip-alerts
    cityrelay consent show --kind plate --subject ABC123
    cityrelay opendata --type traffic.incident --from 2026-11-01T00:00Z --to 2026-11-02T00:00Z \\
        [--k 10] [--epsilon 1.0] [--records] [--out FILE]
    cityrelay privacy keys --ensure [--periods 2026-11,2026-12] | --drop-period 2026-10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import ValidationError

from city import opendata
from city.config import CityConfig
from city.consent import receipt, status_of
from city.pia import Pia, PiaError, approve, effective_status, fingerprint, risks, submit
from city.privacy import (
    PERSONAL,
    KeyRing,
    PrivacyConfig,
    PrivacyPolicy,
    consent_id,
    parse_duration,
    parse_privacy,
    period_of,
)
from jobs.privacy_stage import subscribers_of
from queues.consent import ConsentRegistry
from queues.pia import PiaStore
from workers.cli.policy import parse_duration as parse_span
from workers.cli.policy import parse_time
from workers.runtime import Runtime

PAGE = 5000  # hot-tier entries read per XRANGE


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

    od = subparsers.add_parser("opendata", help="publish k-anonymous open data from the hot tier")
    od.add_argument("--type", required=True, dest="etype")
    od.add_argument("--from", required=True, dest="start", type=parse_time)
    od.add_argument("--to", required=True, dest="end", type=parse_time)
    od.add_argument("--k", type=int)
    od.add_argument("--epsilon", type=float, help="add Laplace noise with this epsilon")
    od.add_argument("--resolution", type=int)
    od.add_argument("--bucket", help="time bucket, e.g. 1h")
    od.add_argument("--records", action="store_true", help="k-anonymous records, not counts")
    od.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    od.set_defaults(func=cmd_opendata)

    priv = subparsers.add_parser("privacy", help="privacy keys")
    prsub = priv.add_subparsers(dest="privacy_command", metavar="ACTION", required=True)
    keys = prsub.add_parser("keys", help="create missing pseudonym keys or delete a period's")
    keys.add_argument("--ensure", action="store_true", help="create missing keys")
    keys.add_argument("--periods", help="comma-separated periods (default: this and next)")
    keys.add_argument("--drop-period", help="delete every key of this period (severs links)")
    keys.set_defaults(func=cmd_keys)


# ------------------------------------------------------------------------------- helpers


def _privacy(runtime: Runtime) -> tuple[CityConfig, Path, PrivacyConfig]:
    city, base = runtime.city()
    config = parse_privacy(city.privacy, runtime.config_path or "<config>", city.department_ids)
    if config is None:
        raise SystemExit("the city config has no privacy: section")
    return city, base, config


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


# ------------------------------------------------------------------------------- open data


def read_hot(runtime: Runtime, etype: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Events of `etype` in the hot tier with `start` <= time < `end` (entries scanned with a
    day of slack around the window: the stream id is the routing time, not the event time)."""
    redis = runtime.redis()
    lo = int((start - timedelta(days=1)).timestamp() * 1000)
    hi = int((end + timedelta(days=1)).timestamp() * 1000)
    out = []
    cursor = f"{lo}-0"
    while True:
        batch = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            redis.xrange(runtime.keys.hot(etype), min=cursor, max=str(hi), count=PAGE),
        )
        for _entry, fields in batch:
            event = json.loads(fields[b"e"])
            when = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
            if start <= when < end:
                out.append(event)
        if len(batch) < PAGE:
            return out
        cursor = "(" + batch[-1][0].decode()


def cmd_opendata(args: argparse.Namespace, runtime: Runtime) -> int:
    city, _, config = _privacy(runtime)
    od = config.opendata
    k = args.k or od.k
    if k < 2:
        print("opendata: --k must be at least 2", file=sys.stderr)
        return 2
    try:
        bucket = parse_duration(args.bucket or od.bucket)
    except ValueError as exc:
        print(f"opendata: --bucket {exc}", file=sys.stderr)
        return 2
    resolution = od.resolution if args.resolution is None else args.resolution
    events = read_hot(runtime, args.etype, args.start, args.end)
    if args.records:
        tp = config.types.get(args.etype)
        if tp is None:
            print(f"opendata: privacy.types declares no {args.etype!r}", file=sys.stderr)
            return 2
        result = opendata.records(events, tp, k, resolution, od.min_resolution, bucket)
    else:
        epsilon = args.epsilon if args.epsilon is not None else od.epsilon
        result = opendata.aggregate(events, k, resolution, od.min_resolution, bucket, epsilon)
    result["meta"].update(
        {
            "type": args.etype,
            "from": args.start.isoformat(),
            "to": args.end.isoformat(),
            "events": len(events),
            "city": city.city,
        }
    )
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {len(result['rows'])} rows to {args.out}")
    else:
        print(text)
    return 0


# ------------------------------------------------------------------------------- keys


def cmd_keys(args: argparse.Namespace, runtime: Runtime) -> int:
    city, base, config = _privacy(runtime)
    name = config.keys.file or os.environ.get(config.keys.env)
    if not name:
        print(f"privacy keys: set privacy.keys.file or ${config.keys.env}", file=sys.stderr)
        return 2
    path = Path(name) if Path(name).is_absolute() or not config.keys.file else base / name
    ring = KeyRing.load(config.keys, base) if path.exists() else KeyRing({})
    if args.drop_period:
        count = ring.drop_period(args.drop_period)
        print(f"deleted {count} keys of period {args.drop_period}: those pseudonyms are unlinkable")
    if args.ensure:
        if args.periods:
            periods = [p.strip() for p in args.periods.split(",") if p.strip()]
        else:
            now = datetime.now(UTC)
            periods = sorted(
                {
                    period_of(t.strftime("%Y-%m-%dT%H:%M:%SZ"), config.pseudonym_period)
                    for t in (now, now + timedelta(days=32))
                }
            )
        domains = sorted({d for d in city.department_ids} | _named_domains(config))
        for key_id in ring.ensure(domains, periods):
            print(f"created {key_id}")
    path.write_text(json.dumps(ring.to_json(), indent=2) + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    return 0


def _named_domains(config: PrivacyConfig) -> set[str]:
    out = set()
    for tp in config.types.values():
        for rule in tp.views:
            for spec in rule.transforms.values():
                if isinstance(spec, dict) and "pseudonym" in spec:
                    out.add(spec["pseudonym"])
    return out
