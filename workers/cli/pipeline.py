"""CLI: publish, ingest, worker, inbox, deadletters (`status`: workers/cli/status.py)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from city.events import Event, new_event_id, source_for
from jobs.context import RouteContext
from queues.connect import WORKER_SETTINGS
from queues.inbox import Inbox
from queues.limits import Backpressure
from queues.metrics import PRIORITIES
from queues.priority import ROLES
from queues.streams import NotReplicatedError, Producer
from workers import logs
from workers.cpu import NICE_HELP, POLICIES, SCHED_HELP, yield_cpu
from workers.runtime import Runtime

PUBLISH_CHUNK = 500
EX_TEMPFAIL = 75  # sysexits.h: try again later (backpressure)
BACKPRESSURE_WAIT_S = 60.0  # how long `publish --file` waits out backpressure


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("publish", help="publish events into a department's ingest stream")
    p.add_argument("--dept", required=True, help="the publishing department")
    p.add_argument("--type", dest="event_type", help="event type, e.g. traffic.incident")
    p.add_argument("--lat", type=float)
    p.add_argument("--lon", type=float)
    p.add_argument("--data", help="the payload as a JSON object")
    p.add_argument("--priority", choices=PRIORITIES)
    p.add_argument("--subject")
    p.add_argument("--id", dest="event_id", help="event id (default: a fresh one)")
    p.add_argument("--file", help="JSON Lines file of events (CloudEvents JSON), '-' for stdin")
    p.add_argument(
        "--csv",
        help="a CSV file mapped by the department's csv: config (--type picks the mapping"
        " when it has several); bad rows dead-lettered with their line; a re-run publishes"
        " nothing twice",
    )
    p.add_argument("--cap", help="a CAP 1.2 alert (XML file, '-' for stdin): publish its events")
    p.add_argument("--dry-run", action="store_true", help="with --cap: print the events only")
    p.add_argument("--raw", action="store_true", help="with --cap: send the XML; ingest parses it")
    p.add_argument(
        "--min-replicas",
        type=int,
        default=int(os.environ.get("CITYRELAY_MIN_REPLICAS", "0")),
        help="acknowledge only once this many replicas hold the events (WAIT); exit 3 if"
        " they do not within --replica-timeout-ms (env CITYRELAY_MIN_REPLICAS, default 0)",
    )
    p.add_argument("--replica-timeout-ms", type=int, default=1000, help="default: 1000")
    p.set_defaults(func=cmd_publish)

    p = subparsers.add_parser("ingest", help="run the ingest consumer (streams -> RQ queues)")
    p.add_argument("--lanes", default="emergency,routine", help="comma list: emergency,routine")
    p.add_argument("--nice", type=int, help=NICE_HELP)
    p.add_argument("--sched", choices=sorted(POLICIES), help=SCHED_HELP)
    p.set_defaults(func=cmd_ingest)

    p = subparsers.add_parser("worker", help="run an RQ worker for one role")
    p.add_argument("--role", choices=sorted(ROLES), default="routine")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument("--name", help="worker name shown in `rq info`")
    p.add_argument("--nice", type=int, help=NICE_HELP)
    p.add_argument("--sched", choices=sorted(POLICIES), help=SCHED_HELP)
    p.set_defaults(func=cmd_worker)

    p = subparsers.add_parser("inbox", help="read (and acknowledge) a department's inbox")
    p.add_argument("--dept", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--follow", action="store_true", help="keep reading as events arrive")
    p.add_argument("--no-ack", action="store_true", help="read without acknowledging")
    p.add_argument("--consumer", default="cli")
    p.set_defaults(func=cmd_inbox)

    p = subparsers.add_parser("deadletters", help="list dead-lettered inputs with their reasons")
    p.add_argument("--count", type=int, default=20)
    p.set_defaults(func=cmd_deadletters)


# -- publish --------------------------------------------------------------------------------
def cmd_publish(args: argparse.Namespace, runtime: Runtime) -> int:
    if args.cap:  # CAP alerts: workers/cli/emergency.py
        from workers.cli.emergency import publish_cap

        return publish_cap(args, runtime)
    producer = Producer(
        runtime.redis(),
        args.dept,
        runtime.keys,
        min_replicas=args.min_replicas,
        replica_timeout_ms=args.replica_timeout_ms,
    )
    try:
        return _publish(args, producer, runtime)
    except NotReplicatedError as exc:
        # The events may be on the primary, but a failover could lose them: publish again
        # (same ids; ingest drops the copies that survived).
        print(f"publish: not acknowledged: {exc}", file=sys.stderr)
        return 3


def _publish(args: argparse.Namespace, producer: Producer, runtime: Runtime) -> int:
    if args.csv:
        return _publish_csv(args, producer, runtime)
    if args.file:
        return _publish_file(producer, args.file)
    if not args.event_type:
        print("publish: give --type (with --data/--lat/--lon) or --file", file=sys.stderr)
        return 2
    try:
        data = json.loads(args.data) if args.data else None
    except json.JSONDecodeError as exc:
        print(f"publish: --data is not JSON: {exc}", file=sys.stderr)
        return 2
    attrs: dict[str, Any] = {"department": args.dept}
    if args.lat is not None or args.lon is not None:
        attrs["location"] = {"lat": args.lat, "lon": args.lon}
    for name in ("priority", "subject"):
        if getattr(args, name):
            attrs[name] = getattr(args, name)
    if args.event_id:
        attrs["id"] = args.event_id
    try:
        event = Event.new(args.event_type, source_for(args.dept), data, **attrs)
    except ValueError as exc:
        print(f"publish: invalid event: {exc}", file=sys.stderr)
        return 2
    try:
        print(producer.publish(event))
    except Backpressure as exc:
        print(f"publish: not accepted, try again later: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    return 0


def _publish_file(producer: Producer, path: str) -> int:
    if path == "-":
        return _publish_lines(producer, sys.stdin, path, None)
    with Path(path).open(encoding="utf-8") as counting:
        total = sum(1 for _ in counting)
    with Path(path).open(encoding="utf-8") as stream:
        return _publish_lines(producer, stream, path, total)


def _publish_lines(producer: Producer, stream: Any, path: str, total: int | None) -> int:
    sent = bad = 0
    chunk: list[dict[str, Any]] = []
    with tqdm(total=total, unit="ev", desc="publish", file=sys.stderr) as bar:
        try:
            for lineno, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                    if not isinstance(event, dict):
                        raise ValueError("not a JSON object")
                except ValueError as exc:
                    print(f"{path}:{lineno}: skipped, not a JSON object: {exc}", file=sys.stderr)
                    bad += 1
                    continue
                event.setdefault("id", new_event_id())  # a resend after backpressure dedupes
                chunk.append(event)
                if len(chunk) >= PUBLISH_CHUNK:
                    sent += _publish_patiently(producer, chunk)
                    bar.update(len(chunk))
                    chunk = []
            if chunk:
                sent += _publish_patiently(producer, chunk)
                bar.update(len(chunk))
        except Backpressure as exc:
            print(f"{path}: stopped after {sent} events, still refused after "
                  f"{BACKPRESSURE_WAIT_S:.0f} s: {exc}", file=sys.stderr)  # fmt: skip
            print(json.dumps({"published": sent, "unreadable_lines": bad, "backpressure": True}))
            return EX_TEMPFAIL
    print(json.dumps({"published": sent, "unreadable_lines": bad}))
    return 1 if bad else 0


def _publish_csv(args: argparse.Namespace, producer: Producer, runtime: Runtime) -> int:
    from city.catalog import EventCatalog
    from queues.csvdrop import CsvDrop

    config, _ = runtime.city()
    try:
        drops = config.department(args.dept).csv
    except KeyError:
        print(f"publish: no department {args.dept!r} in the city config", file=sys.stderr)
        return 2
    chosen = [d for d in drops if args.event_type in (None, d.type)]
    if len(chosen) != 1:
        types = ", ".join(d.type for d in drops) or "none"
        print(f"publish: {args.dept}'s csv: mappings are for {types}; "
              f"{'pick one with --type' if chosen else 'none fits'}", file=sys.stderr)  # fmt: skip
        return 2
    path = Path(args.csv)
    with path.open(encoding="utf-8-sig", newline="") as counting:
        total = max(0, sum(1 for _ in counting) - 1)
    drop = CsvDrop(runtime.redis(), runtime.keys, args.dept, chosen[0], EventCatalog(config),
                   lambda events: _publish_patiently(producer, events))  # fmt: skip
    try:
        with tqdm(total=total, unit="row", desc="publish", file=sys.stderr) as bar:
            report = drop.run(path, bar.update)
    except Backpressure as exc:
        print(f"{path}: stopped, still refused after {BACKPRESSURE_WAIT_S:.0f} s: {exc};"
              " run it again (nothing is published twice)", file=sys.stderr)  # fmt: skip
        return EX_TEMPFAIL
    print(json.dumps(report.to_json()))
    return 1 if report.dead_lettered else 0


def _publish_patiently(producer: Producer, events: list[dict[str, Any]]) -> int:
    """Publish a chunk, waiting out backpressure (up to `BACKPRESSURE_WAIT_S`) and sending
    again only the events that were refused."""
    deadline = time.monotonic() + BACKPRESSURE_WAIT_S
    pending = events
    while True:
        try:
            producer.publish_many(pending)
            return len(events)
        except Backpressure as exc:
            if time.monotonic() + exc.retry_after_s > deadline:
                raise
            refused = set(exc.refused)
            pending = [event for event in pending if event["id"] in refused]
            time.sleep(exc.retry_after_s)


# -- processes ------------------------------------------------------------------------------
def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def cmd_ingest(args: argparse.Namespace, runtime: Runtime) -> int:
    from workers.ingest import IngestWorker

    config, _ = runtime.city()
    lanes = [lane.strip() for lane in args.lanes.split(",") if lane.strip()]
    yield_cpu(args.nice, args.sched, routine="emergency" not in lanes)
    worker = IngestWorker(runtime.redis(**WORKER_SETTINGS), runtime.keys, config, lanes=lanes)
    worker.run(_stop_on_signals())
    return 0


def cmd_worker(args: argparse.Namespace, runtime: Runtime) -> int:
    from workers.worker import run_worker

    if runtime.config_path is None:
        runtime.city()  # raises the helpful "no city config" message
    yield_cpu(args.nice, args.sched, routine=args.role != "emergency")
    context = RouteContext.load(runtime.config_path, runtime.keys, runtime.redis_url)  # type: ignore[arg-type]
    logs.set_role(f"worker-{args.role}")
    # RQ logs every job at INFO: only with --log-level DEBUG (our summary is the INFO line).
    rq_level = "DEBUG" if logging.getLogger().isEnabledFor(logging.DEBUG) else "WARNING"
    run_worker(
        runtime.redis(**WORKER_SETTINGS),
        runtime.keys,
        args.role,
        context,
        burst=args.burst,
        name=args.name,
        log_level=rq_level,
    )
    return 0


# -- reading --------------------------------------------------------------------------------
def cmd_inbox(args: argparse.Namespace, runtime: Runtime) -> int:
    inbox = Inbox(runtime.redis(), args.dept, runtime.keys, consumer=args.consumer)
    shown = 0
    while True:
        messages = inbox.read(count=args.count, block_ms=2000 if args.follow else None)
        for message in messages:
            print(
                json.dumps({"entry": message.entry_id, "event": message.event, "via": message.via})
            )
            shown += 1
        if messages and not args.no_ack:
            inbox.ack(messages)
        if not args.follow and (not messages or shown >= args.count):
            break
    return 0


def cmd_deadletters(args: argparse.Namespace, runtime: Runtime) -> int:
    redis = runtime.redis()
    for entry_id, fields in redis.xrevrange(runtime.keys.deadletter, count=args.count):
        record = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
        record["id"] = entry_id.decode()
        print(json.dumps(record))
    return 0
