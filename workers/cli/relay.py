"""CLI: `cityrelay relay` - move a shard's outbox into another shard; show the routing table."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from redis import Redis

from queues.partition import PartitionError, Relay, local_shard, shard_url
from workers.relay import EmergencyHandover, run_relay
from workers.runtime import Runtime


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "relay",
        help="partitioned city: relay this shard's outboxes into the other shards (--routes: "
        "each department's home shard)",
    )
    p.add_argument("--to", dest="dest", help="the destination shard (default: every other one)")
    p.add_argument(
        "--from",
        dest="source",
        help="the shard this process runs on, at --redis-url (default: $CITYRELAY_SHARD)",
    )
    p.add_argument(
        "--consumer",
        help="consumer name (default: relay-{from}-{to}): a relay restarted under its name "
        "resumes its unacknowledged batch at once; two relays sharing a name are safe (the "
        "markers make the second write of an entry a no-op)",
    )
    p.add_argument("--block-ms", type=int, default=1000, help="idle wait per read")
    p.add_argument("--drain", action="store_true", help="relay until the outbox is empty, exit")
    p.add_argument(
        "--routes", action="store_true", help="print each department's home shard and exit"
    )
    p.set_defaults(func=cmd_relay)


def cmd_relay(args: argparse.Namespace, runtime: Runtime) -> int:
    config, base_dir = runtime.city()
    parts = config.partitions
    if parts is None:
        if args.routes or args.dest or args.drain:
            print(
                "the city has no partitions: section: one Redis, nothing to relay", file=sys.stderr
            )
            return 2
        # One Procfile for every city: an unpartitioned city's relay waits for SIGTERM.
        print("relay: the city is not partitioned; nothing to relay", file=sys.stderr)
        idle = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: idle.set())
        signal.signal(signal.SIGINT, lambda *_: idle.set())
        idle.wait()
        return 0
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
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        source = args.source or local_shard(config)
        dests = [args.dest] if args.dest else [name for name in parts.shards if name != source]
        relays = []
        for dest in dests:
            if dest not in parts.shards:
                raise PartitionError(f"no shard named {dest!r} ({', '.join(parts.shards)})")
            target = Redis.from_url(shard_url(parts, dest))
            relays.append(
                Relay.for_city(
                    config,
                    runtime.keys,
                    runtime.redis(),
                    target,
                    str(source),
                    dest,
                    consumer=args.consumer or f"relay-{source}-{dest}",
                    # emergencies are tracked (deadlines, escalation) on the recipient's shard
                    on_written=EmergencyHandover.for_city(config, base_dir, runtime.keys, target),
                )
            )
    except PartitionError as exc:
        print(f"relay: {exc.message}", file=sys.stderr)
        return 2
    if args.drain:
        for relay in relays:
            print(json.dumps(drain(relay)))
        return 0
    threads = []
    for relay in relays:
        print(
            f"relay: {relay.outbox} on shard {source} -> shard {relay.dest_shard}, "
            f"consumer {relay.consumer}",
            file=sys.stderr,
        )
        thread = threading.Thread(
            target=run_relay, args=(relay, stop, args.block_ms), name=f"relay-{relay.dest_shard}"
        )
        thread.start()
        threads.append(thread)
    while any(thread.is_alive() for thread in threads):
        stop.wait(0.5)
    for thread in threads:
        thread.join()
    return 0


def drain(relay: Relay) -> dict[str, object]:
    """Relay until the outbox is empty (claiming what dead relays left at once)."""
    relay.ensure_group()
    relay.claim_idle_ms = 0
    totals: dict[str, int] = {}
    while True:
        step = relay.relay(relay.reclaim()) + relay.step(None)
        for name, value in step.items():
            totals[name] = totals.get(name, 0) + value
        if not step:
            break
    return {"outbox": relay.outbox, **totals, **relay.backlog()}
