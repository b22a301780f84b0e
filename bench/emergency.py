"""Emergency benchmark on real Redis: emergency latency under routine load, plus the emergency
path's building blocks.

Latency: the real processes run as in the Procfile (ingest per lane, two emergency workers,
routine workers). A routine mix is published at a FIXED rate (default 5 500 events/s,
not a saturating closed loop; 10% above the 5 000/s the target names, because the achieved
figure counts the backlog's drain time too) while emergencies (`health.emergency`, five
recipients each) are published one every `--interval-ms`. An emergency's latency is from its
producer XADD (the ingest entry id) to the XADD into the LAST of its recipients' inboxes (Redis
clock, ms).
Every emergency goes through acknowledgement tracking (a record + a scheduled escalation
check) exactly as in production.

Building blocks (skip with --no-blocks): CAP parse/render rates, spool append and replay rates.

    PYTHONPATH=. python bench/emergency.py [--emergencies 1000] [--rate 5500]

Prints JSON lines; the LAST line holds the contract keys: p50_ms, p99_ms, max_ms,
routine_events_per_s (the background load actually routed per second), and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402

from bench.hops import RedisWatch, RunQueueWaits, hop_breakdown  # noqa: E402
from bench.pipeline import (  # noqa: E402
    _exit_on_sigterm,
    config_file,
    emergency_event,
    pct,
    routine_event,
    start,
    stop,
    warm_up_pipeline,
)
from city.cap import event_to_cap, events_from_cap  # noqa: E402
from queues.cleanup import delete_city  # noqa: E402
from queues.connect import redis_from_url  # noqa: E402
from queues.keys import Keys  # noqa: E402
from queues.metrics import read_stats  # noqa: E402
from queues.spool import Spool  # noqa: E402
from queues.streams import EVENT_FIELD  # noqa: E402
from queues.trace import ENV as TRACE_ENV  # noqa: E402
from queues.trace import trace_key  # noqa: E402
from workers.standins import LocalRedisServer  # noqa: E402

DATA = ROOT / "tests" / "data" / "cap"
# Who gets a health.emergency in the demo city (the bench's emergencies are all in Seattle).
EMERGENCY_RECIPIENTS = ("fire", "ems", "emergency-management", "public-health", "schools")


# --- latency under load -------------------------------------------------------------------


def publish_routine(
    redis: Redis, keys: Keys, rate: float, seconds: float, run_id: bytes
) -> tuple[int, float]:
    """Publish the routine mix at `rate` events/s in 10 ms ticks for `seconds`;
    returns (published, seconds taken)."""
    rng = random.Random(7)
    pool = [routine_event(rng, n) for n in range(20_000)]
    per_tick = max(1, round(rate / 100))
    published = 0
    started = next_tick = time.perf_counter()
    while time.perf_counter() - started < seconds:
        pipe = redis.pipeline(transaction=False)
        for i in range(per_tick):
            n = published + i
            dept, body = pool[n % len(pool)]
            pipe.xadd(
                keys.ingest(dept), {EVENT_FIELD: body.replace(b"@ID@", b"%s-%d" % (run_id, n))}
            )
        pipe.execute()
        published += per_tick
        next_tick += 0.01
        delay = next_tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return published, time.perf_counter() - started


def emergency_latencies(redis: Redis, keys: Keys) -> dict[bytes, float]:
    """ingest entry id -> ms from the producer's XADD to the last recipient inbox's XADD."""
    last: dict[bytes, int] = {}
    for dept in EMERGENCY_RECIPIENTS:
        for entry_id, fields in redis.xrange(keys.inbox(dept)):
            if fields.get(b"pri") != b"emergency":
                continue
            ing = fields[b"ing"]
            at = int(entry_id.split(b"-")[0])
            last[ing] = max(last.get(ing, 0), at)
    return {ing: at - int(ing.split(b"-")[0]) for ing, at in last.items()}


def latency_run(
    redis_url: str,
    emergencies: int,
    interval_ms: float,
    rate: float,
    routine_workers: int,
    ramp_s: float = 5.0,
    emergency_nice: int = 0,
    own_redis: bool = False,
    emergency_workers: int = 2,
) -> dict:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    redis = Redis.from_url(redis_url)
    config = config_file(500)
    os.environ[TRACE_ENV] = "1"  # per-hop timestamps of every emergency (queues/trace.py)
    processes = start(prefix, config, redis_url, routine_workers, emergency_workers)
    names = ["ingest", "ingest-emergency", "emergency"]
    names += [f"emergency{i}" for i in range(1, emergency_workers)]
    names += [f"routine{i}" for i in range(routine_workers)]
    pids = {name: p.pid for name, p in zip(names, processes, strict=True)}
    if redis.connection_pool.connection_kwargs.get("host") in ("127.0.0.1", "localhost"):
        pids["redis"] = int(redis.info("server")["process_id"])
    waits = RunQueueWaits(pids)
    watch = RedisWatch(redis, own_redis, prefix)
    if emergency_nice:  # the emergency ingest and the emergency workers
        for process in processes[1 : 2 + emergency_workers]:
            os.setpriority(os.PRIO_PROCESS, process.pid, emergency_nice)
    load_before = os.getloadavg()
    try:
        warm_up = warm_up_pipeline(redis, keys)  # every process has loaded the city
        # The routine producers: a separate process at nice 10 (in production they are other
        # departments' hosts; on a small bench machine they must not steal the emergency
        # path's CPU, which would measure the load generator, not the pipeline).
        routine = subprocess.Popen(
            [sys.executable, __file__, "--publish-routine", prefix, "--rate", str(rate),
             "--seconds", str(ramp_s + emergencies * interval_ms / 1000 + 0.5)],
            stdout=subprocess.PIPE, env=dict(os.environ, REDIS_URL=redis_url),
        )  # fmt: skip
        time.sleep(ramp_s)  # the routine load reaches its steady state first
        waits.start()
        watch.start()
        rng = random.Random(3)
        em = redis_from_url(redis_url)
        next_at = time.perf_counter()
        for n in range(emergencies):
            em.xadd(keys.ingest("ems", "emergency"), {EVENT_FIELD: emergency_event(rng, n)})
            next_at += interval_ms / 1000
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        time.sleep(0.5)
        run_queue = waits.stop()
        redis_view = watch.stop()
        out, _ = routine.communicate(timeout=120)
        published, seconds = json.loads(out.decode().strip().splitlines()[-1])
        stopped = time.time()
        while time.time() < stopped + 120:
            if read_stats(redis, keys).get("delivered", 0) >= published + emergencies + 2:
                break
            time.sleep(0.05)
        drained_after = time.time() - stopped
        stats = read_stats(redis, keys)
        routed_routine = stats.get("delivered", 0) - emergencies - 2
        lat = sorted(v for k, v in emergency_latencies(redis, keys).items() if k != warm_up)
        tracked = redis.zcard(keys.emergencies)
        breakdown = hop_breakdown(redis.xrange(trace_key(keys)), skip={warm_up.decode()})
        return {
            "emergencies": emergencies,
            "emergencies_delivered": len(lat),
            "emergencies_tracked": tracked,
            "p50_ms": pct(lat, 0.5),
            "p99_ms": pct(lat, 0.99),
            "max_ms": max(lat) if lat else None,
            "mean_ms": round(statistics.fmean(lat), 2) if lat else None,
            "routine_target_per_s": rate,
            "routine_published": published,
            "routine_routed": routed_routine,
            # achieved: routed over the publishing time plus the time the backlog took to drain
            "routine_events_per_s": round(routed_routine / (seconds + drained_after), 1),
            "routine_seconds": round(seconds, 2),
            "backlog_drained_after_s": round(drained_after, 2),
            "routine_workers": routine_workers,
            "emergency_workers": emergency_workers,
            "emergency_nice": emergency_nice,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
            "own_redis": own_redis,
            **breakdown,
            "run_queue": run_queue,
            "redis_view": redis_view,
        }
    finally:
        stop(processes)
        delete_city(redis, keys)
        config.unlink()


# --- building blocks ----------------------------------------------------------------------


def per_second(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """(operations per second, p99 latency in ms) over n calls."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n / sum(times), statistics.quantiles(times, n=100)[98] * 1000


def building_blocks(redis_url: str) -> dict:
    alert = (DATA / "v1dot2_appendix_adot2.xml").read_bytes()
    events_from_cap(alert)  # compile the schema once, as a long-running worker would
    parse_rate, parse_p99 = per_second(lambda: events_from_cap(alert), 2000)
    (event,) = events_from_cap(alert)
    render_rate, render_p99 = per_second(lambda: event_to_cap(event), 2000)
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(Path(tmp) / "bench.db")
        fields = {"event": json.dumps(event.to_wire())}
        append_rate, append_p99 = per_second(
            lambda: spool.append("b:ingest:oem:emergency", fields, event_id=uuid.uuid4().hex), 2000
        )
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        redis = redis_from_url(redis_url)
        spool_b = Spool(Path(tmp) / "replay.db")
        spool_b.append_many(
            [(f"{prefix}:ingest:oem", fields, uuid.uuid4().hex) for _ in range(20_000)]
        )
        t = time.perf_counter()
        replayed = spool_b.replay(redis, batch=500)
        replay_rate = replayed / (time.perf_counter() - t)
        redis.delete(*redis.scan_iter(match=f"{prefix}:*", count=5000))
        spool.close()
        spool_b.close()
    return {
        "cap_parse_per_s": round(parse_rate),
        "cap_parse_p99_ms": round(parse_p99, 3),
        "cap_render_per_s": round(render_rate),
        "cap_render_p99_ms": round(render_p99, 3),
        "spool_append_per_s": round(append_rate),
        "spool_append_p99_ms": round(append_p99, 3),
        "spool_replay_per_s": round(replay_rate),
        "spool_replayed": replayed,
    }


def main() -> None:
    _exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emergencies", type=int, default=1000)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=5500.0, help="routine events/s")
    parser.add_argument("--routine-workers", type=int, default=2)
    parser.add_argument(
        "--emergency-workers", type=int, default=2, help="emergency worker processes (Procfile: 2)"
    )
    parser.add_argument("--ramp-s", type=float, default=5.0, help="routine load before measuring")
    parser.add_argument(
        "--emergency-nice",
        type=int,
        default=0,
        help="niceness of the emergency ingest and worker (negative needs root; e.g. -5 as a "
        "deployment would set with systemd Nice=)",
    )
    parser.add_argument("--no-blocks", action="store_true", help="skip CAP and spool figures")
    parser.add_argument(
        "--own-redis",
        action="store_true",
        help="start a redis-server of its own for the latency run (its SLOWLOG and LATENCY are "
        "then the pipeline's alone)",
    )
    parser.add_argument("--publish-routine", metavar="PREFIX", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if args.publish_routine:  # the routine load generator (a child process)
        os.nice(10)
        done = publish_routine(redis_from_url(redis_url), Keys(args.publish_routine), args.rate,
                               args.seconds, args.publish_routine.encode())  # fmt: skip
        print(json.dumps(done))
        return
    summary: dict = {}
    if not args.no_blocks:
        summary.update(building_blocks(redis_url))
        print(json.dumps({"building_blocks": summary}), flush=True)
    server = LocalRedisServer().start() if args.own_redis else None
    try:
        latency = latency_run(
            server.url if server else redis_url,
            args.emergencies,
            args.interval_ms,
            args.rate,
            args.routine_workers,
            args.ramp_s,
            args.emergency_nice,
            own_redis=server is not None,
            emergency_workers=args.emergency_workers,
        )
    finally:
        if server is not None:
            server.stop()
    print(json.dumps({"latency": latency}), flush=True)
    print(json.dumps({**latency, **summary, "redis": server.url if server else redis_url}))


if __name__ == "__main__":
    main()
