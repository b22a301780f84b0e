"""`cityrelay privacy keys`, and the city's ``privacy:`` section every privacy command reads.

    cityrelay privacy keys --ensure [--periods 2026-11,2026-12] | --drop-period 2026-10

The other privacy commands have their own modules: `pia` (workers/cli/pia.py), `consent`
(workers/cli/consent.py), `opendata` (workers/cli/opendata.py); they load the section with
`_privacy` from here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from city.config import CityConfig
from city.privacy import KeyRing, PrivacyConfig, parse_privacy, period_of
from workers.runtime import Runtime


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
