"""End-to-end pipeline benchmark on real Redis: throughput and latency per priority.

Starts the real processes (ingest per lane, one emergency worker, N routine workers) as the
Procfile does, on a realistic routine mix, in three phases with fresh processes each:
1. throughput: published as fast as the pipeline absorbs it (closed loop, bounded backlog):
   routine_events_per_s, end to end (first producer XADD to last inbox XADD);
2. latency: routine load at a steady rate below capacity (default 60% of phase 1) plus one
   emergency every 20 ms: emergency p50/p99/max and routine p50/p99 (ingest XADD -> inbox
   XADD, Redis clock). Latency is only meaningful below saturation: at overload every queue
   grows without bound, whatever the design;
3. naive: the same workload with one RQ job per event, as a ratio to phase 1.

    python bench/pipeline.py [--seconds 30] [--latency-seconds 20] [--latency-load 5000]
                             [--routine-workers 2] [--naive-seconds 10]

Each phase also reports the CPU microseconds per routed event of each process kind (ingest per
lane, emergency and routine workers, the producer = this process, Redis from `INFO cpu`) over
the measured window (first XADD to last delivery) and the Redis commands per event
(`INFO commandstats` delta; bench/cpu.py). On a Redis shared with other work these Redis
figures include that work: point REDIS_URL at a server of your own to read them.

Prints progress lines, then one JSON object as the last line (`cpu_us_per_event`, the sum
over the processes, and `cpu_us_per_event_by_process` of the throughput phase beside
`routine_events_per_s`). `--naive-seconds 0` skips the naive phase.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from redis import Redis  # noqa: E402

from bench.cpu import CpuMeter, per_event  # noqa: E402
from city.events import Event, source_for  # noqa: E402
from queues.cleanup import delete_city  # noqa: E402
from queues.cluster import is_cluster_url  # noqa: E402
from queues.connect import redis_from_url  # noqa: E402
from queues.keys import Keys  # noqa: E402
from queues.metrics import read_stats  # noqa: E402
from queues.streams import EVENT_FIELD  # noqa: E402

CONFIG = ROOT / "examples" / "seattle" / "city.yaml"
BBOX = (47.50, 47.73, -122.42, -122.25)  # lat min/max, lon min/max around Seattle


def routine_event(rng: random.Random, n: int) -> tuple[str, bytes]:
    lat, lon = rng.uniform(*BBOX[:2]), rng.uniform(*BBOX[2:])
    kind = rng.random()
    if kind < 0.5:
        dept, etype, data = "transit", "transit.vehicle_position", {
            "vehicle_id": f"bus-{n % 900}", "route": str(n % 120),
            "speed_kmh": 31.5, "heading": 90.0,
        }  # fmt: skip
    elif kind < 0.7:
        dept, etype, data = "sdot", "traffic.incident", {"kind": "congestion", "severity": 2}
    elif kind < 0.85:
        dept, etype, data = "environment", "environment.air_quality", {
            "sensor_id": f"aq-{n % 300}", "pm25": 12.0, "aqi": 51,
        }  # fmt: skip
    else:
        dept, etype, data = "spu-water", "utility.meter_alarm", {
            "meter_id": f"m-{n}", "utility": "water", "alarm": "leak",
        }  # fmt: skip
    event = Event.new(
        etype, source_for(dept), data, location={"lat": lat, "lon": lon}, department=dept, id="@ID@"
    )
    return dept, event.model_dump_json(exclude_none=True).encode()


def emergency_event(rng: random.Random, n: int) -> bytes:
    lat, lon = rng.uniform(47.55, 47.70), rng.uniform(-122.38, -122.28)
    event = Event.new(
        "health.emergency",
        source_for("ems"),
        {"incident_number": f"E-{n}", "kind": "cardiac"},
        location={"lat": lat, "lon": lon},
        department="ems",
    )
    return event.model_dump_json(exclude_none=True).encode()


def config_file(batch_max_events: int) -> Path:
    doc = yaml.safe_load(CONFIG.read_text())
    for layer in doc["layers"].values():
        layer["path"] = str((CONFIG.parent / layer["path"]).resolve())
    doc["routing"]["batch_max_events"] = batch_max_events
    path = Path(tempfile.mkstemp(suffix=".yaml", prefix="bench-city-")[1])
    path.write_text(yaml.safe_dump(doc))
    return path


def start(
    prefix: str,
    config: Path,
    redis_url: str,
    routine_workers: int,
    emergency_workers: int = 1,
    emergency_nice: int = 0,
    ingest_consumers: int = 1,
) -> list[subprocess.Popen]:
    """The Procfile's processes: [ingest (x `ingest_consumers`), ingest-emergency, emergency
    workers..., routine...].
    `emergency_nice` < 0 raises the emergency processes' CPU priority (needs root)."""
    env = dict(os.environ, REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
    base = [sys.executable, "-m", "workers.cli", "--prefix", prefix, "--config", str(config)]
    commands = [base + ["ingest", "--lanes", "routine"]] * ingest_consumers
    commands += [base + ["ingest", "--lanes", "emergency"]]
    commands += [
        base + ["worker", "--role", "emergency", "--name", f"{prefix}-em{i}"]
        for i in range(emergency_workers)
    ]
    commands += [
        base + ["worker", "--role", "routine", "--name", f"{prefix}-rt{i}"]
        for i in range(routine_workers)
    ]
    processes = [subprocess.Popen(c, env=env, cwd=ROOT) for c in commands]
    if emergency_nice:
        for process in processes[ingest_consumers : ingest_consumers + 1 + emergency_workers]:
            os.setpriority(os.PRIO_PROCESS, process.pid, emergency_nice)
    return processes


def kinds(
    processes: list[subprocess.Popen], emergency_workers: int, ingest_consumers: int = 1
) -> dict[str, list[int]]:
    """The pids of each process kind, in the order `start` made them."""
    n = ingest_consumers
    return {
        "ingest": [p.pid for p in processes[:n]],
        "ingest_emergency": [processes[n].pid],
        "emergency_workers": [p.pid for p in processes[n + 1 : n + 1 + emergency_workers]],
        "routine_workers": [p.pid for p in processes[n + 1 + emergency_workers :]],
    }


def stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def bench_client(redis_url: str) -> Redis:
    """The bench's own client: a plain one, or for ``redis+cluster://`` the client of one slot
    group the processes use (the run's prefix must then be a hash tag, ``{name}``)."""
    return redis_from_url(redis_url) if is_cluster_url(redis_url) else Redis.from_url(redis_url)


def warm_up_pipeline(redis: Redis, keys: Keys, timeout_s: float = 120) -> bytes:
    """One emergency and one routine event through the pipeline: returns once both arrived,
    i.e. every process is up; returns the warm-up emergency's ingest id (not measured)."""
    rng = random.Random(0)
    ing = redis.xadd(keys.ingest("ems", "emergency"), {EVENT_FIELD: emergency_event(rng, -1)})
    dept, body = routine_event(rng, 0)
    redis.xadd(keys.ingest(dept), {EVENT_FIELD: body.replace(b"@ID@", b"warm-up")})
    deadline = time.time() + timeout_s
    while read_stats(redis, keys).get("delivered", 0) < 2:
        if time.time() > deadline:
            raise RuntimeError("the pipeline processes did not come up")
        time.sleep(0.1)
    time.sleep(0.5)
    return ing


WARM_UP_EVENTS = 2


def latencies(
    redis: Redis, stream: str, priorities: tuple[bytes, ...], since_ms: int = 0
) -> list[float]:
    """Ingest XADD -> inbox XADD (ms) of the inbox entries of the given priorities."""
    values = []
    for entry_id, fields in redis.xrange(stream):
        if fields.get(b"pri") not in priorities:
            continue
        delivered = int(entry_id.split(b"-")[0])
        ingested = int(fields[b"ing"].split(b"-")[0])
        if ingested < since_ms:
            continue
        values.append(delivered - ingested)
    return values


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def run(
    redis_url: str,
    seconds: float,
    batch: int,
    routine_workers: int,
    with_emergencies: bool,
    rate: float | None = None,
    emergency_workers: int = 1,
    emergency_nice: int = 0,
    ingest_consumers: int = 1,
    prefix: str | None = None,
    info: Redis | None = None,
) -> dict:
    """One phase with fresh processes. `rate` None: closed loop (as fast as the pipeline
    absorbs, backlog bounded); else routine events/s published at that steady rate.
    `prefix`: the run's key prefix (default a fresh one); `info`: the Redis whose INFO the CPU
    meter reads (default the run's; on a cluster, the primary serving the slot group)."""
    prefix = prefix or f"bench{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    redis = bench_client(redis_url)
    config = config_file(batch)
    processes = start(
        prefix, config, redis_url, routine_workers, emergency_workers, emergency_nice,
        ingest_consumers,
    )  # fmt: skip
    rng = random.Random(1)
    run_id = prefix.encode()
    try:
        warm_up_pipeline(redis, keys)  # every process has loaded the city
        pool = [routine_event(rng, n) for n in range(20_000)]
        meter = CpuMeter(info or redis, kinds(processes, emergency_workers, ingest_consumers))
        load_before = os.getloadavg()[0]
        before = meter.sample()
        published = emergencies = 0
        max_backlog = 20_000
        chunk = 250 if rate is None else max(1, int(rate / 200))  # steady: 200 chunks/s
        t_start = time.time()
        secs, micros = redis.time()
        t_ms = secs * 1000 + micros // 1000  # Redis time just before the first XADD
        next_emergency = t_start
        while time.time() - t_start < seconds:
            if rate is not None:
                due = (time.time() - t_start) * rate
                if published >= due:
                    time.sleep(0.001)
                    publish = False
                else:
                    publish = True
            else:
                delivered = int(redis.hget(keys.stats, "delivered") or 0)
                publish = published + emergencies - delivered <= max_backlog
                if not publish:
                    time.sleep(0.002)
            if publish:
                pipe = redis.pipeline(transaction=False)
                for i in range(chunk):
                    n = published + i
                    dept, body = pool[n % len(pool)]
                    body = body.replace(b"@ID@", b"%s-%d" % (run_id, n))
                    pipe.xadd(keys.ingest(dept), {EVENT_FIELD: body})
                pipe.execute()
                published += chunk
            if with_emergencies and time.time() >= next_emergency:
                redis.xadd(
                    keys.ingest("ems", "emergency"),
                    {EVENT_FIELD: emergency_event(rng, emergencies)},
                )
                emergencies += 1
                next_emergency += 0.02
        t_publish_end = time.time()
        deadline = time.time() + 120
        while time.time() < deadline:
            stats = read_stats(redis, keys)
            if stats.get("delivered", 0) >= published + emergencies + WARM_UP_EVENTS:
                break
            time.sleep(0.05)
        after = meter.sample()
        stats = read_stats(redis, keys)
        t0 = t_ms  # (ingest trims its streams, so the first entry may be gone by now)
        last_delivery = max(
            int(redis.xrevrange(keys.inbox(d), count=1)[0][0].split(b"-")[0])
            for d in ("traffic-management", "transit", "environment", "public-health")
            if redis.xlen(keys.inbox(d))
        )
        elapsed = (last_delivery - t0) / 1000
        routed = stats.get("delivered", 0) - emergencies - WARM_UP_EVENTS
        emergency_lat = (
            latencies(redis, keys.inbox("emergency-management"), (b"emergency",), t_ms)
            if with_emergencies
            else []
        )
        routine_lat = latencies(
            redis, keys.inbox("traffic-management"), (b"high", b"routine", b"bulk"), t_ms
        )
        return {
            "published": published,
            "routed": routed,
            "duplicates": stats.get("ingest_duplicates", 0),
            "emergencies": emergencies,
            "publish_seconds": round(t_publish_end - t_start, 2),
            "elapsed_s": round(elapsed, 2),
            "events_per_s": round(routed / elapsed, 1),
            "offered_per_s": rate,
            "deliveries": sum(v for k, v in stats.items() if k.startswith("delivered:")),
            "emergency_p50_ms": pct(emergency_lat, 0.5),
            "emergency_p99_ms": pct(emergency_lat, 0.99),
            "emergency_max_ms": max(emergency_lat) if emergency_lat else None,
            "routine_p50_ms": pct(routine_lat, 0.5),
            "routine_p99_ms": pct(routine_lat, 0.99),
            "routine_mean_ms": round(statistics.fmean(routine_lat), 1) if routine_lat else None,
            **per_event(before, after, routed + emergencies),
            "load_average": [load_before, os.getloadavg()[0]],
        }
    finally:
        stop(processes)
        delete_city(redis, keys)
        config.unlink()


def _exit_on_sigterm() -> None:
    """`timeout` sends SIGTERM: turn it into SystemExit so `finally` stops the child processes."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    _exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30, help="throughput phase length")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument(
        "--latency-load",
        type=float,
        help="routine events/s during the latency phase (default: 60%% of measured throughput)",
    )
    parser.add_argument("--naive-seconds", type=float, default=10)
    parser.add_argument("--routine-workers", type=int, default=2)
    parser.add_argument("--ingest-consumers", type=int, default=1, help="routine-lane ingest")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--emergency-workers", type=int, default=2)
    parser.add_argument(
        "--emergency-nice",
        type=int,
        default=-5 if os.geteuid() == 0 else 0,
        help="CPU priority of the emergency processes (default -5 as root, as recommended)",
    )
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    # 1. Throughput: as fast as the pipeline absorbs (no emergencies).
    throughput = run(
        redis_url, args.seconds, args.batch, args.routine_workers, False,
        ingest_consumers=args.ingest_consumers,
    )  # fmt: skip
    print(json.dumps({"throughput": throughput}), flush=True)
    # 2. Latency: routine load at a steady rate below capacity, one emergency every 20 ms.
    load = args.latency_load or round(0.6 * throughput["events_per_s"], -2)
    latency = run(
        redis_url,
        args.latency_seconds,
        args.batch,
        args.routine_workers,
        True,
        load,
        args.emergency_workers,
        args.emergency_nice,
        args.ingest_consumers,
    )
    print(json.dumps({"latency": latency}), flush=True)
    # 3. The naive design: one RQ job per event.
    naive = {"events_per_s": None}
    if args.naive_seconds > 0:  # 0: skip the naive phase
        naive = run(redis_url, args.naive_seconds, 1, args.routine_workers, False)
        print(json.dumps({"naive": naive}), flush=True)
    summary = {
        "routine_events_per_s": throughput["events_per_s"],
        "cpu_us_per_event": throughput["cpu_us_per_event"],
        "cpu_us_per_event_by_process": throughput["cpu_us_per_event_by_process"],
        "redis_commands_per_event": throughput["redis_commands_per_event"],
        "emergency_p50_ms": latency["emergency_p50_ms"],
        "emergency_p99_ms": latency["emergency_p99_ms"],
        "emergency_max_ms": latency["emergency_max_ms"],
        "latency_phase_routine_per_s": latency["events_per_s"],
        "routine_p50_ms": latency["routine_p50_ms"],
        "routine_p99_ms": latency["routine_p99_ms"],
        "naive_events_per_s": naive["events_per_s"],
        "batched_vs_naive": (
            round(throughput["events_per_s"] / naive["events_per_s"], 1)
            if naive["events_per_s"]
            else None
        ),
        "emergencies": latency["emergencies"],
        "seconds": args.seconds,
        "routine_workers": args.routine_workers,
        "ingest_consumers": args.ingest_consumers,
        "emergency_workers": args.emergency_workers,
        "emergency_nice": args.emergency_nice,
        "load_average": os.getloadavg()[0],
        "throughput_load_average": throughput["load_average"],
        "redis": redis_url,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
