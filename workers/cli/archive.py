"""`cityrelay archive ...`, `cityrelay history ...` and `cityrelay scheduler`.

S3 settings come from the environment: ``CITYRELAY_S3_BUCKET`` (default cityrelay-archive),
``CITYRELAY_S3_ENDPOINT`` or ``AWS_ENDPOINT_URL`` (the moto server in the demo), region
``AWS_DEFAULT_REGION`` (default us-east-1). The schedule is the city YAML's ``retention:``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

import pyarrow.parquet as pq

from city.retention import Hold, RetentionSchedule
from jobs import lake
from jobs.archive import (
    Archiver,
    apply_lifecycle,
    archive_shard,
    lifecycle_configuration,
    load_schedule,
)
from jobs.disposition import Disposer, HoldStore, parse_day
from jobs.retrieval import (
    History,
    Query,
    RestoreRequired,
    parse_near,
    parse_when,
    to_geojson,
    write_jsonl,
)
from jobs.schedule import build_scheduler, run_scheduler
from queues.hot import hot_report
from workers.runtime import Runtime


def register(subparsers: Any) -> None:
    archive = subparsers.add_parser(
        "archive", help="hot tier -> S3 archive, lifecycle, holds, disposition"
    )
    sub = archive.add_subparsers(dest="archive_command", metavar="ACTION", required=True)

    run = sub.add_parser("run", help="archive every window past its hot time, now")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="hot-tier size per type and the memory alarm")
    status.add_argument("--alarm-mb", type=int, default=512)
    status.set_defaults(func=cmd_status)

    lifecycle = sub.add_parser("lifecycle", help="print (or --apply) the S3 lifecycle rules")
    lifecycle.add_argument("--apply", action="store_true")
    lifecycle.set_defaults(func=cmd_lifecycle)

    init = sub.add_parser("init", help="create the archive and ledger buckets (Object Lock on)")
    init.set_defaults(func=cmd_init)

    dispose = sub.add_parser(
        "dispose", help="dispose of what has passed retention (holds respected)"
    )
    dispose.add_argument("--dry-run", action="store_true")
    dispose.add_argument("--now", help="pretend it is this time (RFC 3339)")
    dispose.set_defaults(func=cmd_dispose)

    holds = sub.add_parser("holds", help="legal holds: they block disposition")
    hsub = holds.add_subparsers(dest="holds_command", metavar="ACTION", required=True)
    add = hsub.add_parser("add")
    add.add_argument("id")
    add.add_argument(
        "--kind", required=True, choices=["litigation", "public_records", "audit", "other"]
    )
    add.add_argument("--reason", required=True)
    add.add_argument("--by", required=True, help="who placed the hold")
    add.add_argument("--series")
    add.add_argument("--type", action="append", default=[], dest="types")
    add.add_argument("--from", dest="start")
    add.add_argument("--to", dest="end")
    add.set_defaults(func=cmd_holds_add)
    remove = hsub.add_parser("remove")
    remove.add_argument("id")
    remove.set_defaults(func=cmd_holds_remove)
    hsub.add_parser("list").set_defaults(func=cmd_holds_list)

    history = subparsers.add_parser("history", help="retrieve archived events")
    history.add_argument("--type", required=True, dest="event_type")
    history.add_argument("--from", dest="start")
    history.add_argument("--to", dest="end")
    history.add_argument("--dept")
    history.add_argument("--near", help="lat,lon,metres")
    history.add_argument("--format", choices=["jsonl", "parquet", "geojson"], default="jsonl")
    history.add_argument("--output", "-o", help="file (default: stdout; parquet needs a file)")
    history.add_argument(
        "--restore", action="store_true", help="request restore of archived objects"
    )
    history.set_defaults(func=cmd_history)

    scheduler = subparsers.add_parser(
        "scheduler", help="run the one cron scheduler (archive, disposition)"
    )
    scheduler.add_argument("--archive-every", type=int, default=300, help="seconds")
    scheduler.add_argument("--dispose-cron", default="17 3 * * *")
    scheduler.set_defaults(func=cmd_scheduler)


def _schedule(runtime: Runtime) -> RetentionSchedule:
    return load_schedule(runtime.config_path)


def _s3() -> tuple[lake.S3Settings, Any]:
    settings = lake.S3Settings.from_env()
    return settings, settings.client()


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_run(args: argparse.Namespace, runtime: Runtime) -> int:
    settings, s3 = _s3()
    shard = archive_shard(runtime.prefix, runtime.config_path)  # partitioned: in object names
    archiver = Archiver(
        runtime.redis(), runtime.keys, s3, settings.bucket, _schedule(runtime), shard=shard
    )
    report = archiver.run()
    _print(report.summary())
    return 0


def cmd_status(args: argparse.Namespace, runtime: Runtime) -> int:
    report = hot_report(runtime.redis(), runtime.keys, args.alarm_mb * 1024 * 1024)
    _print(
        {
            "events": report.total_events,
            "bytes": report.total_bytes,
            "alarm": report.alarm,
            "streams": [s.__dict__ for s in report.streams],
        }
    )
    return 1 if report.alarm else 0


def cmd_lifecycle(args: argparse.Namespace, runtime: Runtime) -> int:
    schedule = _schedule(runtime)
    if args.apply:
        settings, s3 = _s3()
        _print(apply_lifecycle(s3, settings.bucket, schedule))
    else:
        _print(lifecycle_configuration(schedule))
    return 0


def cmd_init(args: argparse.Namespace, runtime: Runtime) -> int:
    settings, s3 = _s3()
    lake.ensure_buckets(s3, settings)
    print(f"buckets ready: {settings.bucket}, {settings.ledger_bucket}")
    return 0


def cmd_dispose(args: argparse.Namespace, runtime: Runtime) -> int:
    settings, s3 = _s3()
    now = parse_when(args.now) if args.now else None
    _print(Disposer(s3, settings, _schedule(runtime)).run(now, dry_run=args.dry_run).summary())
    return 0


def cmd_holds_add(args: argparse.Namespace, runtime: Runtime) -> int:
    settings, s3 = _s3()
    hold = Hold(
        id=args.id,
        kind=args.kind,
        reason=args.reason,
        placed_by=args.by,
        placed_at=datetime.now(UTC),
        series=args.series,
        types=args.types,
        start=parse_day(args.start),
        end=parse_day(args.end),
    )
    HoldStore(s3, settings.bucket).add(hold)
    print(f"hold {hold.id} placed")
    return 0


def cmd_holds_remove(args: argparse.Namespace, runtime: Runtime) -> int:
    settings, s3 = _s3()
    if not HoldStore(s3, settings.bucket).remove(args.id):
        print(f"no hold {args.id!r}", file=sys.stderr)
        return 1
    print(f"hold {args.id} removed")
    return 0


def cmd_holds_list(args: argparse.Namespace, runtime: Runtime) -> int:
    settings, s3 = _s3()
    for hold in HoldStore(s3, settings.bucket).list():
        print(hold.model_dump_json())
    return 0


def cmd_history(args: argparse.Namespace, runtime: Runtime) -> int:
    settings, s3 = _s3()
    try:
        query = Query(
            args.event_type,
            start=parse_when(args.start) if args.start else None,
            end=parse_when(args.end) if args.end else None,
            dept=args.dept,
            near=parse_near(args.near) if args.near else None,
        )
    except ValueError as exc:
        print(f"history: {exc}", file=sys.stderr)
        return 2
    history = History(s3, settings.bucket)
    if args.restore:
        keys = history.request_restore(query)
        print(f"restore requested for {len(keys)} object(s)", file=sys.stderr)
        return 0
    try:
        table = history.table(query)
    except RestoreRequired as exc:
        print(f"history: {exc}", file=sys.stderr)
        return 3
    if args.format == "parquet":
        if not args.output:
            print("history: --format parquet needs --output FILE", file=sys.stderr)
            return 2
        pq.write_table(table, args.output, compression="zstd")
        return 0
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        if args.format == "geojson":
            json.dump(to_geojson(lake.table_to_wire(table)), out)
            out.write("\n")
        else:
            write_jsonl(lake.table_to_wire(table), out)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_scheduler(args: argparse.Namespace, runtime: Runtime) -> int:  # pragma: no cover
    scheduler = build_scheduler(
        runtime.redis(), runtime.keys, args.archive_every, args.dispose_cron
    )
    run_scheduler(scheduler)
    return 0
