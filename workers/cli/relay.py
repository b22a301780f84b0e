"""CLI: `cityrelay relay` - move a shard's outbox into another shard; show the routing table."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from redis import Redis

from city.config import CityConfig
from queues.partition import PartitionError, group_keys, local_shard, shard_url
from queues.relay import Relay
from workers.relay import EmergencyHandover, run_relay
from workers.runtime import Runtime


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "relay",
        help="partitioned city: relay this shard's outboxes into the other shards (--routes: "
        "each department's home shard)",
    )
    p.add_argument(
        "--to",
        dest="dest",
        help="the destination shard (default: every other one; slot groups: this group only)",
    )
    p.add_argument(
        "--from",
        dest="source",
        help="the shard this process runs on, at --redis-url (default: $CITYRELAY_SHARD); "
        "slot groups: the source group (default: every other one; the relay runs in, and "
        "pulls into, the group its prefix names)",
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
    stop = threading.Event()  # set by SIGTERM / SIGINT from here on: none is missed
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if parts is None:
        if args.routes or args.dest or args.drain:
            print(
                "the city has no partitions: section: one Redis, nothing to relay", file=sys.stderr
            )
            return 2
        return _idle("the city is not partitioned", stop)
    if args.routes:
        routes = {
            "default": parts.default,
            "control": parts.control_shard,
            "shards": {
                name: {
                    **(
                        {"prefix": spec.prefix}
                        if spec.prefix is not None
                        else {"redis": spec.url or f"${spec.url_env}"}
                    ),
                    "departments": parts.departments_on(name, config.department_ids),
                }
                for name, spec in parts.shards.items()
            },
        }
        print(json.dumps(routes, indent=2))
        return 0
    try:
        if parts.slot_groups:
            relays = _pull_into_group(args, runtime, config, base_dir)
        else:
            relays = _push_from_shard(args, runtime, config, base_dir)
    except PartitionError as exc:
        print(f"relay: {exc.message}", file=sys.stderr)
        return 2
    if args.drain:
        for relay in relays:
            print(json.dumps(drain(relay)))
        return 0
    if not relays:  # one shard or slot group: no other one to relay from or to
        return _idle(f"no other shard than {', '.join(parts.shards)}", stop)
    threads = []
    for relay in relays:
        print(
            f"relay: {relay.outbox} on shard {relay.source_shard} -> shard {relay.dest_shard}, "
            f"consumer {relay.consumer}",
            file=sys.stderr,
        )
        thread = threading.Thread(
            target=run_relay,
            args=(relay, stop, args.block_ms),
            name=f"relay-{relay.source_shard}-{relay.dest_shard}",
        )
        thread.start()
        threads.append(thread)
    while all(thread.is_alive() for thread in threads) and not stop.is_set():
        stop.wait(0.5)
    # One relay thread dead of an error its loop does not ride out: stop the others and exit
    # non-zero, so the supervisor restarts the process (a half-dead relay would look alive).
    failed = not stop.is_set()
    stop.set()
    for thread in threads:
        thread.join()
    if failed:
        print("relay: a relay thread stopped on an error; exiting", file=sys.stderr)
        return 1
    return 0


def _idle(why: str, stop: threading.Event) -> int:
    """Say there is nothing to relay, then wait for `stop` (SIGTERM, SIGINT) and exit 0: one
    Procfile serves every city, and a Procfile runner stops every process when one exits."""
    print(f"relay: {why}; nothing to relay", file=sys.stderr)
    stop.wait()
    return 0


def _push_from_shard(
    args: argparse.Namespace, runtime: Runtime, config: CityConfig, base_dir: Path
) -> list[Relay]:
    """URL shards: this shard's outboxes into each other shard (`--to`: one), each at its URL."""
    parts = config.partitions
    assert parts is not None
    source = args.source or local_shard(config, prefix=runtime.keys.prefix)
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
    return relays


def _pull_into_group(
    args: argparse.Namespace, runtime: Runtime, config: CityConfig, base_dir: Path
) -> list[Relay]:
    """Slot groups: every other group's outbox for this group (`--from`: one) into this group,
    on the one cluster client. The relay runs with this group's prefix because the escalation
    checks it schedules here go into this group's RQ keys (one RQ_KEY_PREFIX per process)."""
    parts = config.partitions
    assert parts is not None
    dest = local_shard(config, prefix=runtime.keys.prefix)
    assert dest is not None
    if args.dest and args.dest != dest:
        raise PartitionError(
            f"--to {args.dest}: a slot group's relay runs in its destination group, with that "
            "group's prefix (CITYRELAY_PREFIX)"
        )
    sources = [args.source] if args.source else [name for name in parts.shards if name != dest]
    groups = group_keys(parts)
    client = runtime.redis()
    handover = EmergencyHandover.for_city(config, base_dir, groups[dest], client)
    relays = []
    for source in sources:
        if source not in parts.shards:
            raise PartitionError(f"no shard named {source!r} ({', '.join(parts.shards)})")
        relays.append(
            Relay.for_city(
                config,
                groups[source],
                client,
                client,
                source,
                dest,
                consumer=args.consumer or f"relay-{source}-{dest}",
                on_written=handover,  # tracked in this group, scheduled on its RQ queues
            )
        )
    return relays


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
