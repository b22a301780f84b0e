"""CLI: `cityrelay relay` - move a shard's outbox into another shard; show the routing table."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from redis import Redis

from queues.partition import PartitionError, Relay, local_shard, shard_url
from workers.runtime import Runtime


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "relay",
        help="partitioned city: relay this shard's outbox for shard B into B (or show routes)",
    )
    p.add_argument("--to", dest="dest", help="the destination shard")
    p.add_argument(
        "--from",
        dest="source",
        help="the shard this process runs on, at --redis-url (default: $CITYRELAY_SHARD)",
    )
    p.add_argument(
        "--consumer",
        help="consumer name (default: host-pid); a stable name resumes its own batch at once "
        "after a restart instead of after routing.claim_idle_ms",
    )
    p.add_argument("--block-ms", type=int, default=1000, help="idle wait per read")
    p.add_argument("--drain", action="store_true", help="relay until the outbox is empty, exit")
    p.add_argument(
        "--routes", action="store_true", help="print each department's home shard and exit"
    )
    p.set_defaults(func=cmd_relay)


def cmd_relay(args: argparse.Namespace, runtime: Runtime) -> int:
    config, _ = runtime.city()
    parts = config.partitions
    if parts is None:
        print("the city has no partitions: section (everything is on one Redis)", file=sys.stderr)
        return 2
    if args.routes:
        routes = {
            "default": parts.default,
            "control": parts.control_shard,
            "shards": {
                name: {
                    "redis": spec.url or f"${spec.url_env}",
                    "departments": parts.departments_on(name, config.department_ids),
                }
                for name, spec in parts.shards.items()
            },
        }
        print(json.dumps(routes, indent=2))
        return 0
    if not args.dest:
        print("relay: give --to SHARD (or --routes)", file=sys.stderr)
        return 2
    try:
        source = args.source or local_shard(config)
        dest_url = shard_url(parts, args.dest) if args.dest in parts.shards else ""
        options = {"consumer": args.consumer} if args.consumer else {}
        relay = Relay.for_city(
            config,
            runtime.keys,
            runtime.redis(),
            Redis.from_url(dest_url),
            str(source),
            args.dest,
            **options,
        )
    except PartitionError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    if args.drain:
        relay.ensure_group()
        totals: dict[str, int] = {}
        while True:
            step = relay.relay(relay.reclaim()) + relay.step(None)
            for name, value in step.items():
                totals[name] = totals.get(name, 0) + value
            if not step:
                break
        print(json.dumps({"outbox": relay.outbox, **totals, **relay.backlog()}))
        return 0
    from workers.relay import run_relay

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(
        f"relay: {relay.outbox} on shard {source} -> shard {args.dest}, consumer {relay.consumer}",
        file=sys.stderr,
    )
    run_relay(relay, stop, idle_block_ms=args.block_ms)
    return 0
