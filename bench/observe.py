"""What observability costs: the counters on the hot path and one exporter scrape.

1. counters: the same routed batch (Seattle, N events over three priorities) with and without
   the per-department-and-priority counters (`queues.metrics.record_counts`), on a private
   redis-server (INFO commandstats needs a server nobody else uses): Redis commands and
   HINCRBYs per run. The counters ride in pipelines the batch already sends, so they add
   commands, never round trips.
2. scrape: `cityrelay metrics` collection time (median and max of R scrapes) for the Seattle
   city after the batch.

    python bench/observe.py [--events 2000] [--scrapes 30]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from redis import Redis  # noqa: E402

import jobs.emergency.levels  # noqa: E402
import jobs.route  # noqa: E402
import workers.ingest  # noqa: E402
from city.config import load_city  # noqa: E402
from city.events import Event, source_for  # noqa: E402
from city.routing import Router  # noqa: E402
from jobs.context import RouteContext  # noqa: E402
from queues.cleanup import delete_city  # noqa: E402
from queues.keys import Keys  # noqa: E402
from queues.metrics import record_counts  # noqa: E402
from queues.observe import CityCollector  # noqa: E402
from queues.streams import Producer  # noqa: E402
from workers.ingest import IngestWorker  # noqa: E402
from workers.standins import LocalRedisServer  # noqa: E402
from workers.worker import build_worker  # noqa: E402

CONFIG = ROOT / "examples" / "seattle" / "city.yaml"
WRITERS = (workers.ingest, jobs.route, jobs.emergency.levels)  # modules that call record_counts


def _events(n: int) -> list[Event]:
    rng = random.Random(1)
    return [
        Event.new(
            "traffic.incident", source_for("sdot"), {"kind": "collision", "severity": 2},
            location={"lat": rng.uniform(47.52, 47.72), "lon": rng.uniform(-122.41, -122.26)},
            priority=rng.choice(["high", "routine", "bulk"]),
        )
        for _ in range(n)
    ]  # fmt: skip


def _route(redis: Redis, keys: Keys, context: RouteContext, events: list[Event]) -> None:
    Producer(redis, "sdot", keys).publish_many(events)
    ingest = IngestWorker(redis, keys, context.config, consumer="bench")
    while ingest.step(None):
        pass
    for role in ("emergency", "routine"):
        build_worker(redis, keys, role, context, name=f"{keys.prefix}-{role}").work(
            burst=True, logging_level="ERROR"
        )


def counters(redis: Redis, context: RouteContext, n: int, with_counts: bool) -> dict[str, Any]:
    keys = Keys(f"b{uuid.uuid4().hex[:8]}")
    context.keys = keys
    for module in WRITERS:
        module.record_counts = record_counts if with_counts else (lambda *a, **k: None)  # type: ignore[attr-defined]
    events = _events(n)
    try:
        redis.config_resetstat()
        _route(redis, keys, context, events)
        stats = redis.info("commandstats")
    finally:
        for module in WRITERS:
            module.record_counts = record_counts  # type: ignore[attr-defined]
        delete_city(redis, keys)
    return {
        "commands": sum(v["calls"] for v in stats.values()),
        "hincrby": stats.get("cmdstat_hincrby", {}).get("calls", 0),
    }


def scrape(redis: Redis, context: RouteContext, n: int, scrapes: int) -> dict[str, Any]:
    keys = Keys(f"b{uuid.uuid4().hex[:8]}")
    context.keys = keys
    try:
        _route(redis, keys, context, _events(n))
        registry = CollectorRegistry()
        registry.register(CityCollector(redis, keys, context.config.department_ids))
        times, body = [], b""
        for _ in range(scrapes):
            started = time.perf_counter()
            body = generate_latest(registry)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        delete_city(redis, keys)
    return {
        "scrapes": scrapes,
        "median_ms": round(statistics.median(times), 2),
        "max_ms": round(max(times), 2),
        "bytes": len(body),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--scrapes", type=int, default=30)
    args = parser.parse_args()
    config, base = load_city(CONFIG)
    context = RouteContext(config=config, router=Router.from_config(config, base), keys=Keys("b"))
    server = LocalRedisServer().start()
    try:
        redis = Redis.from_url(server.url)
        counters(redis, context, 200, True)  # warm up (script loading, caches)
        without = counters(redis, context, args.events, False)
        with_counts = counters(redis, context, args.events, True)
        result = {
            "departments": len(config.department_ids),
            "events": args.events,
            "counters": {
                "without": without,
                "with": with_counts,
                "extra_commands_pct": round(
                    100 * (with_counts["commands"] - without["commands"]) / without["commands"], 2
                ),
            },
            "scrape": scrape(redis, context, args.events, args.scrapes),
        }
    finally:
        server.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
