"""Profile ingest and the route job on recorded batches (cProfile, CPU time).

Publishes `--events` routine events of bench/pipeline.py's mix into a fresh city prefix on real
Redis, runs the ingest step over them in this process (`IngestWorker.step`, the batches it
enqueues are recorded), then runs the route job on each recorded batch (`deliver_items`), each
under cProfile with `time.process_time` as the clock, so the figures are CPU time and hold on
a loaded machine. Prints the top entries of each and, as the last line, JSON with the CPU us per
event of each stage.

With `--worker`, the recorded jobs are run by a routine RQ worker in burst mode
(`workers.worker.build_worker`, as `cityrelay worker --role routine` runs them) instead of by
calling the route job: the difference is what RQ's per-job work costs per event, which shrinks
with the job size (`--batch`, the city's `routing.batch_max_events`).

    REDIS_URL=redis://127.0.0.1:6399/0 python bench/profile_batch.py [--events 10000] [--top 25]
        [--batch 500] [--worker] [--plain]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402
from rq import Queue  # noqa: E402
from rq.serializers import JSONSerializer  # noqa: E402

from bench.cpu import CpuMeter, per_event  # noqa: E402
from bench.pipeline import config_file, routine_event  # noqa: E402
from city.config import load_city  # noqa: E402
from jobs.context import RouteContext, set_context  # noqa: E402
from jobs.route import deliver_items  # noqa: E402
from queues.cleanup import delete_city  # noqa: E402
from queues.keys import Keys  # noqa: E402
from queues.priority import queue_name  # noqa: E402
from queues.streams import EVENT_FIELD  # noqa: E402
from workers.ingest import IngestWorker  # noqa: E402
from workers.worker import build_worker  # noqa: E402


def redis_cpu_s(redis: Redis) -> float:
    """The server's CPU seconds so far (meaningful on a Redis of your own)."""
    info = redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def recorded_batches(redis: Redis, keys: Keys) -> list[list[dict[str, Any]]]:
    """The items of every route job ingest has queued (high, routine, bulk), in queue order."""
    batches = []
    for name in ("high", "routine", "bulk"):
        queue = Queue(queue_name(keys, name), connection=redis, serializer=JSONSerializer)
        batches += [job.args[0] for job in queue.jobs]
    return batches


def top(profile: cProfile.Profile, count: int, sort: str) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).strip_dirs().sort_stats(sort).print_stats(count)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--plain", action="store_true", help="CPU time only, no profiler")
    parser.add_argument("--batch", type=int, default=500, help="events per route job at most")
    parser.add_argument(
        "--worker", action="store_true", help="run the jobs in a routine RQ worker (burst)"
    )
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    redis = Redis.from_url(redis_url)
    prefix = f"prof{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    path = config_file(args.batch)
    try:
        config, _ = load_city(path)
        ingest = IngestWorker(redis, keys, config)
        context = RouteContext.load(path, keys, redis_url)
        set_context(context)
        rng = random.Random(1)
        pipe = redis.pipeline(transaction=False)
        for n in range(args.events):
            dept, body = routine_event(rng, n)
            pipe.xadd(keys.ingest(dept), {EVENT_FIELD: body.replace(b"@ID@", b"p-%d" % n)})
        pipe.execute()
        # Warm both paths on a few events of their own (first-call compilation, caches).
        warm = [routine_event(rng, n) for n in range(50)]
        for n, (dept, body) in enumerate(warm):
            redis.xadd(keys.ingest(dept), {EVENT_FIELD: body.replace(b"@ID@", b"w-%d" % n)})
        ingest.step()

        redis_s = [redis_cpu_s(redis)]
        ingest_profile = cProfile.Profile(time.process_time)
        if args.plain:
            ingest_profile.enable = ingest_profile.disable = lambda: None  # type: ignore[method-assign]
        t0 = time.process_time()
        accepted = 0
        while True:
            ingest_profile.enable()
            counters = ingest.step()
            ingest_profile.disable()
            if not counters:
                break
            accepted += counters["accepted"] + counters["duplicates"]
        ingest_cpu = time.process_time() - t0
        redis_s.append(redis_cpu_s(redis))

        batches = recorded_batches(redis, keys)
        meter = CpuMeter(redis, {})
        before = meter.sample()
        route_profile = cProfile.Profile(time.process_time)
        if args.plain:
            route_profile.enable = route_profile.disable = lambda: None  # type: ignore[method-assign]
        routed = 0
        t0 = time.process_time()
        if args.worker:
            worker = build_worker(redis, keys, "routine", context, name=f"{prefix}-w")
            route_profile.enable()
            worker.work(burst=True, logging_level="WARNING", with_scheduler=False)
            route_profile.disable()
            routed = sum(len(items) for items in batches)
        for items in [] if args.worker else batches:
            items = [i for i in items if not str(i["e"]["id"]).startswith("w-")]
            if not items:
                continue
            route_profile.enable()
            deliver_items(context, redis, items, batch_id="profile")
            route_profile.disable()
            routed += len(items)
        route_cpu = time.process_time() - t0
        redis_s.append(redis_cpu_s(redis))
        commands = per_event(before, meter.sample(), routed)
        redis_us = {
            "route_redis_commands_per_event": commands["redis_commands_by_name_per_event"],
            "route_redis_command_us_per_event": commands["redis_command_us_per_event"],
            "redis_ingest_us_per_event": round((redis_s[1] - redis_s[0]) * 1e6 / max(routed, 1), 1),
            "redis_route_us_per_event": round((redis_s[2] - redis_s[1]) * 1e6 / max(routed, 1), 1),
        }
        if args.plain:
            print(
                json.dumps(
                    {
                        "ingest_us_per_event": round(ingest_cpu * 1e6 / max(accepted, 1), 1),
                        "route_us_per_event": round(route_cpu * 1e6 / max(routed, 1), 1),
                        "events": routed,
                        "jobs": len(batches),
                        "stage": "worker" if args.worker else "route job",
                        **redis_us,
                        "load_average": os.getloadavg()[0],
                    }
                )
            )
            return
        print(f"== ingest: {accepted} events, {ingest_cpu * 1e6 / max(accepted, 1):.1f} us/event")
        print(top(ingest_profile, args.top, args.sort))
        print(f"== route: {routed} events, {route_cpu * 1e6 / max(routed, 1):.1f} us/event")
        print(top(route_profile, args.top, args.sort))
        print(
            json.dumps(
                {
                    "events": args.events,
                    "ingest_us_per_event": round(ingest_cpu * 1e6 / max(accepted, 1), 1),
                    "route_us_per_event": round(route_cpu * 1e6 / max(routed, 1), 1),
                    **redis_us,
                    "note": "CPU time under cProfile (its overhead included)",
                    "load_average": os.getloadavg()[0],
                }
            )
        )
    finally:
        delete_city(redis, keys)
        path.unlink()


if __name__ == "__main__":
    main()
