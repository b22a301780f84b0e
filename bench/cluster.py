"""One Redis versus a 3-primary Redis Cluster, end to end, in one run on this machine.

For each deployment - a plain redis-server of our own on a free port, then a cluster of 3
primaries and 3 replicas (workers.standin_cluster.LocalRedisCluster) - the Procfile's
processes serve one city (on the cluster, one slot group: the prefix ``{name}``), in two phases
with fresh processes each, reusing the other benches:

1. throughput: bench/pipeline.py's closed-loop phase (`run`): routine events/s end to end
   (first producer XADD to last inbox XADD);
2. correctness and latency: bench/chaos.py's `run_chaos` with no kills, at 60% of that rate,
   one event in 20 an emergency, producer retries and invalid inputs: emergency p50/p99
   (ingest XADD -> inbox XADD) and `lost` / `duplicated` / `wrong` counted per event id and
   inbox.

Each deployment runs in a child process: RQ reads its key prefix once, at import, and on the
cluster it must be the group's (``RQ_KEY_PREFIX={name}:rq``).

The cross-slot share is the share of deliveries whose inbox is in another slot than the ingest
stream the event came in on (those would go through an outbox and the relay). With one slot
group every key of the city is in one slot: the share is 0, and the cluster serves the city
from one primary, so it gives no more write capacity than one node (the others hold only
replicas and other slots). More needs a city split into several slot groups, which is not on
this branch.

    python bench/cluster.py [--seconds 15] [--events 20000] [--routine-workers 2]

Prints each deployment's figures as a JSON line, then one JSON object as the last line with
`single_events_per_s`, `cluster_events_per_s`, the emergency p99 of each, `cross_slot_share`
and the cluster run's `lost`, `duplicated`, `wrong`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.crc import key_slot  # noqa: E402

from bench.pipeline import _exit_on_sigterm  # noqa: E402
from city.config import load_city  # noqa: E402
from queues.keys import Keys  # noqa: E402
from workers.standin_cluster import LocalRedisCluster  # noqa: E402
from workers.standins import LocalRedisServer  # noqa: E402

LATENCY_SHARE = 0.6  # phase 2 offers this share of phase 1's rate: below saturation
SEATTLE = ROOT / "examples" / "seattle" / "city.yaml"


def cross_slot_share(prefix: str) -> tuple[float, int]:
    """(share of the city's (ingest stream, inbox) pairs in different slots, slots in use).
    Every pair is counted once: with one slot group the share is 0 whatever the mix."""
    keys = Keys(prefix)
    city, _ = load_city(SEATTLE)
    departments = city.department_ids
    streams = [keys.ingest(d, lane) for d in departments for lane in ("routine", "emergency")]
    inboxes = [keys.inbox(d) for d in departments]
    pairs = [(key_slot(s.encode()), key_slot(i.encode())) for s in streams for i in inboxes]
    slots = {slot for pair in pairs for slot in pair}
    return sum(a != b for a, b in pairs) / len(pairs), len(slots)


def measure(
    phase: str, redis_url: str, prefix: str, info_url: str, rate: float, args: argparse.Namespace
) -> dict[str, Any]:
    """One phase on one deployment (in the child process): "throughput" or "chaos"."""
    if phase == "throughput":
        from redis import Redis

        from bench.pipeline import run

        result = run(
            redis_url, args.seconds, args.batch, args.routine_workers, False,
            prefix=prefix, info=Redis.from_url(info_url),
        )  # fmt: skip
        return {
            "events_per_s": result["events_per_s"],
            "routed": result["routed"],
            "elapsed_s": result["elapsed_s"],
            "cpu_us_per_event": result["cpu_us_per_event"],
            "redis_cpu_us_per_event": result["cpu_us_per_event_by_process"].get("redis"),
        }
    from bench.chaos import run_chaos

    result = run_chaos(
        redis_url,
        events=args.events,
        kills=0,
        rate=rate,
        routine_workers=args.routine_workers,
        emergency_workers=args.emergency_workers,
        prefix=prefix,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    keep = ("lost", "duplicated", "wrong", "deliveries", "expected_deliveries", "dead_lettered",
            "invalid_published", "failed_jobs", "rate", "achieved_rate", "emergencies",
            "emergency_p50_ms", "emergency_p99_ms", "emergency_max_ms", "seconds")  # fmt: skip
    return {k: result[k] for k in keep}


def child(phase: str, redis_url: str, prefix: str, info_url: str, rate: float, args: Any) -> dict:
    """`measure` in a child process: RQ reads its key prefix at import, and on a cluster it
    must be the slot group's."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("RQ_KEY_PREFIX", None)
    if prefix.startswith("{"):
        env["RQ_KEY_PREFIX"] = f"{prefix}:rq"
    command = [sys.executable, __file__, "--child", phase, redis_url, prefix, info_url, str(rate)]
    command += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "child"]
    done = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def deployment(
    name: str, redis_url: str, tag: bool, info_url: Callable[[str], str], args: Any
) -> dict[str, Any]:
    """Throughput, then correctness and latency at `LATENCY_SHARE` of it, each under a fresh
    prefix (a hash tag `{name}` when `tag`); `info_url(prefix)`: the node serving it."""

    def prefix() -> str:
        name = f"bc{uuid.uuid4().hex[:8]}"
        return "{" + name + "}" if tag else name

    first, second = prefix(), prefix()
    throughput = child("throughput", redis_url, first, info_url(first), 0, args)
    rate = round(LATENCY_SHARE * throughput["events_per_s"], -1)
    chaos = child("chaos", redis_url, second, info_url(second), rate, args)
    result = {"events_per_s": throughput["events_per_s"], "throughput": throughput, **chaos}
    print(json.dumps({name: result}), flush=True)
    return result


def main() -> None:
    _exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15, help="throughput phase length")
    parser.add_argument("--events", type=int, default=20_000, help="latency/correctness phase")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--routine-workers", type=int, default=2)
    parser.add_argument("--emergency-workers", type=int, default=1)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)  # one phase, in a child
    args = parser.parse_args()
    if args.child:
        phase, url, prefix, info_url, rate = args.child
        print(json.dumps(measure(phase, url, prefix, info_url, float(rate), args)))
        return
    server = LocalRedisServer().start()
    try:
        single = deployment("single", server.url, False, lambda prefix: server.url, args)
    finally:
        server.stop()
    share, slots = cross_slot_share("{bc}")
    cluster = LocalRedisCluster().start()
    try:

        def owner(prefix: str) -> str:  # the primary serving the group: its INFO (Redis CPU)
            return f"redis://127.0.0.1:{cluster.slot_owner(key_slot(prefix.encode()))}/0"

        on_cluster = deployment("cluster", cluster.url, True, owner, args)
    finally:
        cluster.stop()
    summary = {
        "single_events_per_s": single["events_per_s"],
        "cluster_events_per_s": on_cluster["events_per_s"],
        "cluster_vs_single": round(on_cluster["events_per_s"] / single["events_per_s"], 2),
        "single_emergency_p99_ms": single["emergency_p99_ms"],
        "cluster_emergency_p99_ms": on_cluster["emergency_p99_ms"],
        "cross_slot_share": share,
        "slot_groups": slots,
        "cluster_primaries": 3,
        "note": (
            "one slot group: every key of the city in one slot, served by one primary; "
            "the cluster gives no more write capacity than one node"
            if slots == 1
            else f"{slots} slots in use"
        ),
        "lost": on_cluster["lost"],
        "duplicated": on_cluster["duplicated"],
        "wrong": on_cluster["wrong"],
        "single_lost_duplicated_wrong": [single[k] for k in ("lost", "duplicated", "wrong")],
        "events": args.events,
        "seconds": args.seconds,
        "routine_workers": args.routine_workers,
        "emergency_workers": args.emergency_workers,
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
