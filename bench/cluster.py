"""One Redis versus a 3-primary Redis Cluster, end to end, in one run on this machine.

For each deployment - a plain redis-server of our own on a free port, then a cluster of 3
primaries and 3 replicas (workers.standin_cluster.LocalRedisCluster) - the Procfile's
processes serve the Seattle city, in two phases with fresh processes and fresh keys each, both
bench/chaos.py's `run_chaos` without kills (its workload, its counting):

1. throughput: closed loop (as fast as the pipeline absorbs, backlog bounded) for `--seconds`,
   routine events only: events/s end to end (Redis time of the first producer XADD to the
   newest inbox entry);
2. correctness and latency: at 60% of that rate, one event in 100 an emergency, producer
   retries and invalid inputs: emergency p50/p99 (ingest XADD -> inbox XADD).

Both phases count `lost` / `duplicated` / `wrong` per event id and inbox (an entry in a
department's inbox under a group that is not its home counts as wrong).

On the cluster the city is split into `--groups` slot groups (default 3, one per primary:
``partitions:`` with a hash-tag prefix per group, bench/slot_groups.py): public safety,
mobility, and utilities with the rest, each group's prefix hashing to a slot of a different
primary. Each group runs its own processes (ingest per lane, the emergency, routine and
escalation workers, the cron scheduler, the relay) under its prefix; each department's events
go to its home group's ingest stream, and a delivery to a department of another group goes
through the routing group's outbox and the relay of the department's group. The cross-slot
share is measured: the deliveries that arrived whose inbox is in another group than the event's
ingest stream. `--groups 1` is the whole city in one slot (one primary; share 0).

Every group runs as many processes as the single deployment plus three (escalation, scheduler,
relay), all on this host: with 2 cores, N groups contend for the same CPUs as the one Redis
did, so the cluster figure shows the cost of the relay hop and of the processes per group, not
the capacity N primaries on N hosts would give.

Each phase runs in a child process: RQ reads its key prefix once, at import, and on the
cluster it must be a group's (``RQ_KEY_PREFIX={name}:rq``, the first group's).

    python bench/cluster.py [--seconds 15] [--groups 3] [--routine-workers 2]

Prints each deployment's figures as a JSON line, then one JSON object as the last line with
`single_events_per_s`, `cluster_events_per_s`, the emergency p99 of each, `cross_slot_share`
and the cluster run's `lost`, `duplicated`, `wrong` (both phases).
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

from bench.pipeline import _exit_on_sigterm  # noqa: E402
from bench.slot_groups import MAX_GROUPS, group_prefixes, partitions_section  # noqa: E402
from city.config import load_city  # noqa: E402
from workers.standin_cluster import LocalRedisCluster  # noqa: E402
from workers.standins import LocalRedisServer  # noqa: E402

LATENCY_SHARE = 0.6  # phase 2 offers this share of phase 1's rate: below saturation
MAX_EVENTS = 1_000_000  # the closed loop's cap (it ends on time first)
SEATTLE = ROOT / "examples" / "seattle" / "city.yaml"
KEEP = ("events_per_s", "lost", "duplicated", "wrong", "misplaced", "deliveries",
        "expected_deliveries", "slot_groups", "cross_group_deliveries", "cross_slot_share",
        "relayed", "dead_lettered", "invalid_published", "failed_jobs", "rate", "achieved_rate",
        "emergencies", "emergency_p50_ms", "emergency_p99_ms", "emergency_max_ms",
        "publish_seconds", "drain_seconds")  # fmt: skip


def measure(phase: str, redis_url: str, layout: dict[str, Any], rate: float, args: Any) -> dict:
    """One phase on one deployment (in the child process): "throughput" or "latency"."""
    from bench.chaos import EMERGENCY_EVERY, run_chaos

    throughput = phase == "throughput"
    result = run_chaos(
        redis_url,
        events=MAX_EVENTS if throughput else max(1000, int(rate * args.latency_seconds)),
        kills=0,
        rate=None if throughput else rate,
        seconds=args.seconds if throughput else None,
        emergency_every=None if throughput else EMERGENCY_EVERY,
        routine_workers=args.routine_workers,
        emergency_workers=args.emergency_workers,
        prefix=layout.get("prefix"),
        partitions=layout.get("partitions"),
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    return {k: result[k] for k in KEEP}


def child(phase: str, redis_url: str, layout: dict[str, Any], rate: float, args: Any) -> dict:
    """`measure` in a child process: RQ reads its key prefix at import, and on a cluster it
    must be a slot group's (the first group's: the only RQ keys the bench itself reads)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("RQ_KEY_PREFIX", None)
    first = layout["partitions"]["shards"]["a"]["prefix"] if "partitions" in layout else None
    first = first or layout.get("prefix")
    if first and first.startswith("{"):
        env["RQ_KEY_PREFIX"] = f"{first}:rq"
    command = [sys.executable, __file__, "--child", phase, redis_url, json.dumps(layout)]
    command += [str(rate)]
    command += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "child"]
    done = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def deployment(name: str, redis_url: str, layout: Callable[[], dict], args: Any) -> dict:
    """Throughput, then correctness and latency at `LATENCY_SHARE` of it, each on a fresh
    `layout()` (``{"prefix": ...}`` or ``{"partitions": ...}``)."""
    throughput = child("throughput", redis_url, layout(), 0, args)
    rate = round(LATENCY_SHARE * throughput["events_per_s"], -1)
    latency = child("latency", redis_url, layout(), rate, args)
    result = {**latency, "latency_events_per_s": latency["events_per_s"], "throughput": throughput}
    result["events_per_s"] = throughput["events_per_s"]  # the deployment's figure: phase 1's
    for k in ("lost", "duplicated", "wrong"):  # over both phases
        result[k] = throughput[k] + latency[k]
    print(json.dumps({name: result}), flush=True)
    return result


def main() -> None:
    _exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15, help="throughput phase length")
    parser.add_argument("--latency-seconds", type=float, default=10, help="latency phase length")
    parser.add_argument(
        "--groups", type=int, default=3, choices=range(1, MAX_GROUPS + 1),
        help="slot groups of the city on the cluster (default 3: one per primary)",
    )  # fmt: skip
    parser.add_argument("--routine-workers", type=int, default=2, help="per group")
    parser.add_argument("--emergency-workers", type=int, default=1, help="per group")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)  # one phase, in a child
    args = parser.parse_args()
    if args.child:
        phase, url, layout, rate = args.child
        print(json.dumps(measure(phase, url, json.loads(layout), float(rate), args)))
        return
    server = LocalRedisServer().start()
    try:
        single = deployment(
            "single", server.url, lambda: {"prefix": f"bc{uuid.uuid4().hex[:8]}"}, args
        )
    finally:
        server.stop()
    departments = load_city(SEATTLE)[0].department_ids
    cluster = LocalRedisCluster().start()
    try:

        def layout() -> dict[str, Any]:
            stem = f"bc{uuid.uuid4().hex[:6]}"
            if args.groups == 1:
                return {"prefix": "{" + stem + "}"}
            prefixes = group_prefixes(cluster, args.groups, stem)
            return {"partitions": partitions_section(prefixes, departments)}

        on_cluster = deployment("cluster", cluster.url, layout, args)
    finally:
        cluster.stop()
    per_group = 2 + args.emergency_workers + args.routine_workers + (3 if args.groups > 1 else 0)
    summary = {
        "single_events_per_s": single["events_per_s"],
        "cluster_events_per_s": on_cluster["events_per_s"],
        "cluster_vs_single": round(on_cluster["events_per_s"] / single["events_per_s"], 2),
        "single_emergency_p99_ms": single["emergency_p99_ms"],
        "cluster_emergency_p99_ms": on_cluster["emergency_p99_ms"],
        "cross_slot_share": on_cluster["cross_slot_share"],
        "relayed": on_cluster["relayed"],
        "slot_groups": args.groups,
        "cluster_primaries": 3,
        "processes": {
            "single": 2 + args.emergency_workers + args.routine_workers,
            "cluster": per_group * args.groups,
        },  # fmt: skip
        "note": (
            "one slot group: every key of the city in one slot, served by one primary; "
            "the cluster gives no more write capacity than one node"
            if args.groups == 1
            else f"{args.groups} slot groups on {args.groups} primaries, {per_group} processes "
            f"each, all on this host's {os.cpu_count()} cores with the 6 redis-servers: the "
            "groups contend for the CPUs one Redis had; the figure is the cost of the relay "
            "hop and the processes per group, not the capacity of one primary per host"
        ),
        "lost": on_cluster["lost"],
        "duplicated": on_cluster["duplicated"],
        "wrong": on_cluster["wrong"],
        "single_lost_duplicated_wrong": [single[k] for k in ("lost", "duplicated", "wrong")],
        "seconds": args.seconds,
        "latency_seconds": args.latency_seconds,
        "routine_workers": args.routine_workers,
        "emergency_workers": args.emergency_workers,
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
