"""`cityrelay grant|policy|audit|acl`: manage sharing and prove what happened.

    cityrelay grant create --owner transportation --to police --type traffic.incident \\
        --purpose investigation --fields kind,plate --for 72h
    cityrelay grant revoke g-1234 --by transportation
    cityrelay grant list [--active] [--json]
    cityrelay policy explain --event incident.json --dept police
    cityrelay audit verify | audit trace EVENT_ID
    cityrelay acl show | acl apply --secrets secrets.json [--prune]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from city.config import CityConfig
from city.events import Event
from city.sharing import (
    Authorizer,
    Grant,
    GrantError,
    PolicySet,
    SharingConfig,
    compile_subscriptions,
    explain,
)
from queues import acl
from queues.audit import AuditLog
from queues.cluster import is_cluster_url
from queues.grants import GrantStore
from workers.runtime import Runtime

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: use a number and s/m/h/d, e.g. 90m or 72h")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a timezone, e.g. 2026-11-25T10:00Z")
    return value.astimezone(UTC)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    grant = subparsers.add_parser("grant", help="time-bound, purpose-limited sharing grants")
    gsub = grant.add_subparsers(dest="grant_command", metavar="ACTION", required=True)

    create = gsub.add_parser("create", help="grant (or delegate, or declare break-glass)")
    create.add_argument("--owner", help="department whose data is shared (break-glass: '*')")
    create.add_argument("--to", required=True, dest="grantee", help="receiving department")
    create.add_argument("--by", help="who grants (default: the owner; delegation: the grantee)")
    create.add_argument(
        "--type",
        action="append",
        dest="types",
        required=True,
        help="event type or prefix (repeatable)",
    )
    create.add_argument(
        "--purpose", action="append", dest="purposes", help="purpose covered (repeatable)"
    )
    create.add_argument("--fields", type=_csv, help="data fields allowed, comma-separated")
    create.add_argument("--from", dest="valid_from", type=parse_time, help="default: now")
    until = create.add_mutually_exclusive_group(required=True)
    until.add_argument("--until", dest="valid_until", type=parse_time)
    until.add_argument("--for", dest="duration", type=parse_duration)
    create.add_argument(
        "--delegate-depth",
        type=int,
        default=0,
        help="how many further levels the grantee may re-grant",
    )
    create.add_argument("--parent", help="delegate from this grant (you are its grantee)")
    create.add_argument(
        "--break-glass",
        action="store_true",
        help="declared emergency override (audited loudly; needs --reason)",
    )
    create.add_argument("--reason", default="")
    create.set_defaults(func=cmd_grant_create)

    revoke = gsub.add_parser("revoke", help="revoke a grant and everything delegated from it")
    revoke.add_argument("grant_id")
    revoke.add_argument("--by", required=True, help="the owner or the grantor")
    revoke.set_defaults(func=cmd_grant_revoke)

    listing = gsub.add_parser("list", help="list grants")
    listing.add_argument("--active", action="store_true", help="only those in force now")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_grant_list)

    policy = subparsers.add_parser("policy", help="sharing policies")
    psub = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    exp = psub.add_parser("explain", help="why an event would (not) reach a department")
    exp.add_argument("--event", required=True, type=Path, help="event JSON file")
    exp.add_argument("--dept", required=True)
    exp.add_argument("--sub", help="only this subscription")
    exp.add_argument("--at", type=parse_time, help="decision time (default: now)")
    exp.set_defaults(func=cmd_policy_explain)

    audit = subparsers.add_parser("audit", help="the hash-chained audit log")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    ver = asub.add_parser("verify", help="detect altered, removed or reordered records")
    ver.set_defaults(func=cmd_audit_verify)
    trace = asub.add_parser("trace", help="every recorded delivery decision about one event")
    trace.add_argument("event_id")
    trace.set_defaults(func=cmd_audit_trace)

    acl_p = subparsers.add_parser("acl", help="Redis ACL users derived from the city config")
    aclsub = acl_p.add_subparsers(dest="acl_command", metavar="ACTION", required=True)
    show = aclsub.add_parser("show", help="print the ACL rules")
    show.add_argument("--secrets", type=Path, help="passwords file (rules show their hashes)")
    show.set_defaults(func=cmd_acl_show)
    apply = aclsub.add_parser("apply", help="create/reset the users in Redis")
    apply.add_argument(
        "--secrets",
        type=Path,
        required=True,
        help="JSON {user: password}; missing users get new ones written here",
    )
    apply.add_argument(
        "--prune", action="store_true", help="delete department users no longer in the config"
    )
    apply.set_defaults(func=cmd_acl_apply)


def _sharing(runtime: Runtime) -> tuple[Any, SharingConfig]:
    city, _ = runtime.city()
    return city, getattr(city, "sharing", None) or SharingConfig()


def _store(runtime: Runtime, sharing: SharingConfig | None = None) -> GrantStore:
    minutes = sharing.break_glass.max_minutes if sharing else 240
    return GrantStore(runtime.redis(), runtime.keys, break_glass_max_minutes=minutes)


def cmd_grant_create(args: argparse.Namespace, runtime: Runtime) -> int:
    sharing = _sharing(runtime)[1] if runtime.config_path else None
    store = _store(runtime, sharing)
    start = args.valid_from or datetime.now(UTC)
    end = args.valid_until or start + args.duration
    owner = args.owner
    if args.parent and owner is None:
        owner = store.get(args.parent).owner
    if owner is None:
        owner = "*" if args.break_glass else None
    if owner is None:
        print("grant create: --owner is required", file=sys.stderr)
        return 2
    grantor = args.by or (args.grantee if args.break_glass else owner)
    purposes = args.purposes or (["*"] if args.break_glass else None)
    if not purposes:
        print("grant create: name at least one --purpose", file=sys.stderr)
        return 2
    try:
        grant = Grant(
            owner=owner,
            grantee=args.grantee,
            grantor=grantor,
            types=tuple(args.types),
            purposes=tuple(purposes),
            fields=tuple(args.fields) if args.fields else None,
            valid_from=start,
            valid_until=end,
            parent=args.parent,
            delegate_depth=args.delegate_depth,
            break_glass=args.break_glass,
            reason=args.reason,
        )
        store.create(grant)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"]) or "grant"
            print(f"grant create: {where}: {err['msg']}", file=sys.stderr)
        return 2
    except GrantError as exc:
        print(f"grant create: refused: {exc}", file=sys.stderr)
        return 2
    if grant.break_glass:
        print(
            f"BREAK-GLASS declared by {grant.grantee}: {grant.reason} "
            f"(until {grant.valid_until.isoformat()}); this is audited",
            file=sys.stderr,
        )
    print(grant.id)
    return 0


def cmd_grant_revoke(args: argparse.Namespace, runtime: Runtime) -> int:
    try:
        revoked = _store(runtime).revoke(args.grant_id, args.by)
    except GrantError as exc:
        print(f"grant revoke: {exc}", file=sys.stderr)
        return 2
    for gid in revoked:
        print(f"revoked {gid}")
    if not revoked:
        print(f"{args.grant_id} was already revoked")
    return 0


def cmd_grant_list(args: argparse.Namespace, runtime: Runtime) -> int:
    now = time.time()
    grants = _store(runtime).list(active_only=args.active, now=now)
    if args.json:
        print(json.dumps([g.model_dump(mode="json") for g in grants], indent=2))
        return 0
    for g in grants:
        state = (
            "revoked"
            if g.revoked_at
            else "active"
            if g.active(now)
            else "expired"
            if g.valid_until.timestamp() <= now
            else "pending"
        )
        fields = ",".join(g.fields) if g.fields is not None else "*"
        extra = f" parent={g.parent}" if g.parent else ""
        extra += " BREAK-GLASS" if g.break_glass else ""
        print(
            f"{g.id} {state:8} {g.owner} -> {g.grantee} types={','.join(g.types)} "
            f"purposes={','.join(g.purposes)} fields={fields} "
            f"until={g.valid_until.isoformat()}{extra}"
        )
    return 0


def cmd_policy_explain(args: argparse.Namespace, runtime: Runtime) -> int:
    city, sharing = _sharing(runtime)
    try:
        raw = json.loads(args.event.read_text(encoding="utf-8"))
        event = Event.model_validate(raw).to_wire()
    except (OSError, ValueError) as exc:
        print(f"policy explain: {args.event}: {exc}", file=sys.stderr)
        return 2
    subs = [s for s in compile_subscriptions(city.departments).all if s.dept == args.dept]
    if args.sub:
        subs = [s for s in subs if s.id == args.sub]
    if not subs:
        print(f"policy explain: department {args.dept!r} has no such subscription", file=sys.stderr)
        return 2
    now = (args.at or datetime.now(UTC)).timestamp()
    auth = Authorizer(PolicySet.from_config(sharing), _store(runtime, sharing).load())
    for sub in subs:
        print(explain(auth, event, sub, now).text())
    print("(spatial scope is decided by the router's jurisdiction index, not shown here)")
    return 0


def cmd_audit_verify(args: argparse.Namespace, runtime: Runtime) -> int:
    log = AuditLog(runtime.redis(), runtime.keys)
    log.drain_inbox(actor="cli")  # chain what the route jobs recorded but did not chain yet
    result = log.verify()
    for problem in result.problems:
        print(f"PROBLEM {problem}")
    if result.ok:
        print(f"audit chain OK: {result.records} records")
        return 0
    print(f"audit chain BROKEN: {len(result.problems)} problem(s) in {result.records} records")
    return 1


def cmd_audit_trace(args: argparse.Namespace, runtime: Runtime) -> int:
    log = AuditLog(runtime.redis(), runtime.keys)
    log.drain_inbox(actor="cli")
    rows = log.trace(args.event_id)
    for row in rows:
        verdict = "delivered" if row.get("allow") else f"refused ({row.get('reason')})"
        print(
            f"seq {row['seq']} {row['ts']} batch {row['batch']}: {row.get('dept')}/"
            f"{row.get('sub')} {verdict} purpose={row.get('purpose')} "
            f"policy={row.get('policy')} grant={row.get('grant')} "
            f"policy_version={row['policy_version']} grant_version={row['grant_version']} "
            f"jurisdiction_version={row['jurisdiction_version']}"
        )
    if not rows:
        print(f"no delivery of {args.event_id} is recorded")
        return 1
    return 0


def _read_secrets(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise SystemExit(f"{path}: expected a JSON object {{user: password}}")
    return data


def _acl_scopes(city: CityConfig, runtime: Runtime) -> list[tuple[acl.Scope, list[str]]]:
    """The city's users on this Redis: one set, or one per slot group (all from one run)."""
    return acl.city_scopes(city, runtime.keys, is_cluster_url(runtime.redis_url))


def cmd_acl_show(args: argparse.Namespace, runtime: Runtime) -> int:
    city, _ = runtime.city()
    secrets = _read_secrets(args.secrets)
    for user in acl.city_users(_acl_scopes(city, runtime)):
        print(user.show(secrets.get(user.name)))
    return 0


def cmd_acl_apply(args: argparse.Namespace, runtime: Runtime) -> int:
    city, _ = runtime.city()
    redis = runtime.redis()
    secrets = _read_secrets(args.secrets)
    scopes = _acl_scopes(city, runtime)
    passwords, pruned = acl.apply(redis, scopes, passwords=secrets, prune=args.prune)
    if passwords != secrets:
        fd = os.open(args.secrets, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(passwords, out, indent=2, sort_keys=True)
        print(f"new passwords written to {args.secrets}")
    users = acl.city_users(scopes)
    AuditLog(redis, runtime.keys).append(
        "acl.apply", {"users": [u.name for u in users], "pruned": pruned}, "operator"
    )
    print(f"applied {len(users)} ACL users" + (f", pruned {len(pruned)}" if pruned else ""))
    return 0
