"""Archive benchmark: hot tier -> Parquet on S3 throughput, and a month out of five years.

1. Throughput: N routed events of one type sit in the Redis hot tier (real Redis at $REDIS_URL
   when reachable, with a unique key prefix; else fakeredis). The archive job runs end to end:
   XRANGE, encode, Parquet (zstd), PUT, read back and verify, XDEL.
2. Retrieval: a synthetic five-year archive of a city (daily partitions, several types, written
   in the archive's own format) and one month of one type retrieved through `History`, with the
   number of S3 requests counted.

S3 is moto in-process unless ``--endpoint`` (or $CITYRELAY_S3_ENDPOINT) names a real one.
The last line printed is one JSON object (the contract): archive_events_per_s,
month_retrieval_s, month_retrieval_requests, years, and more.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from city.events import Event  # noqa: E402
from city.retention import EXAMPLE_RETENTION, parse_retention  # noqa: E402
from jobs import lake  # noqa: E402
from jobs.archive import Archiver  # noqa: E402
from jobs.retrieval import History, Query, month_bounds  # noqa: E402
from queues.hot import HotBatch, HotEntry, hot_append  # noqa: E402
from queues.keys import Keys  # noqa: E402

TYPES = ("safety.dispatch", "traffic.incident", "utility.meter_alarm", "health.emergency")


def redis_client() -> tuple[Any, str]:
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        client = Redis.from_url(url)
        client.ping()
        return client, "redis"
    except RedisConnectionError:
        import fakeredis

        return fakeredis.FakeRedis(), "fakeredis"


def wire_event(event_type: str, when: datetime, n: int) -> bytes:
    event = Event.new(
        event_type,
        "/city/spd",
        {"n": n, "unit": f"E{n % 40}", "code": "10-50", "note": "two vehicles, no injuries"},
        time=when,
        location={"lat": 47.55 + (n % 1000) * 1e-4, "lon": -122.40 + (n % 777) * 1e-4},
        department="spd",
        priority="high",
    )
    return json.dumps(event.to_wire()).encode()


def bench_throughput(
    s3: Any,
    bucket: str,
    events: int,
    warm: bool = True,
    start: datetime = datetime(2026, 3, 10, tzinfo=UTC),
) -> dict[str, Any]:
    if warm:  # pay the one-time costs (imports, Arrow thread pools) outside the measurement
        bench_throughput(s3, bucket, 2000, warm=False, start=datetime(2026, 2, 1, tzinfo=UTC))
    redis, backend = redis_client()
    keys = Keys(f"bench{uuid4().hex[:8]}")
    schedule = parse_retention(EXAMPLE_RETENTION)
    step_ms = max(1, 86_400_000 // events)  # one day of routing time
    bodies = [wire_event("traffic.incident", start, n) for n in range(min(events, 5000))]
    try:
        pipe = redis.pipeline(transaction=False)
        base_ms = int(start.timestamp() * 1000)
        for n in range(events):
            ms = base_ms + n * step_ms
            hot_append(
                pipe,
                keys,
                bodies[n % len(bodies)],
                "fire,spd",
                "1-0",
                "traffic.incident",
                f"{ms}-{n}",
            )
            if n % 10_000 == 9_999:
                pipe.execute()
        pipe.execute()
        archiver = Archiver(
            redis, keys, s3, bucket, schedule, now=lambda: start + timedelta(days=4)
        )
        t0 = time.perf_counter()
        report = archiver.run()
        elapsed = time.perf_counter() - t0
        assert report.trimmed == events, report.summary()
        assert redis.xlen(keys.hot("traffic.incident")) == 0
    finally:
        for key in redis.scan_iter(match=f"{keys.prefix}:*"):
            redis.delete(key)
    return {
        "archive_events": events,
        "archive_s": round(elapsed, 3),
        "archive_events_per_s": round(events / elapsed),
        "archive_redis": backend,
    }


def build_five_years(s3: Any, bucket: str, years: int, per_day: int) -> dict[str, Any]:
    """Daily partitions for `years` years and several types, in the archive's exact format."""
    schedule = parse_retention(EXAMPLE_RETENTION)
    first = date(2021, 1, 1)
    days = (date(first.year + years, 1, 1) - first).days
    template = {
        t: [wire_event(t, datetime(2021, 1, 1, tzinfo=UTC), n) for n in range(per_day)]
        for t in TYPES
    }
    objects = rows = size = 0
    t0 = time.perf_counter()
    for d in range(days):
        day = first + timedelta(days=d)
        base = datetime(day.year, day.month, day.day, tzinfo=UTC)
        base_ms = int(base.timestamp() * 1000)
        stamp = base.strftime("%Y-%m-%dT")
        for event_type in TYPES:
            series = schedule.series_for(event_type)
            assert series is not None
            entries = []
            for n, body in enumerate(template[event_type]):
                # Same payload shape, this day's time: swap the date inside the JSON.
                moved = body.replace(b'"2021-01-01T', f'"{stamp}'.encode())
                ms = base_ms + n * (86_400_000 // per_day)
                entries.append(HotEntry(f"{ms}-{n}", moved, "fire,spd", "1-0"))
            table = lake.encode_events(HotBatch.of(entries))
            body = lake.parquet_bytes(table)
            key = lake.object_key(lake.EVENTS, series.id, event_type, day, base_ms)
            s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                StorageClass=series.storage_class_at(timedelta(0)),
            )
            objects += 1
            rows += table.num_rows
            size += len(body)
    for event_type in TYPES:  # the archive job writes these markers with each window
        series = schedule.series_for(event_type)
        assert series is not None
        s3.put_object(Bucket=bucket, Key=lake.index_key(event_type, series.id), Body=b"")
    return {
        "lake_objects": objects,
        "lake_rows": rows,
        "lake_mb": round(size / 1e6, 1),
        "lake_build_s": round(time.perf_counter() - t0, 1),
    }


def bench_month(s3: Any, bucket: str, years: int, per_day: int) -> dict[str, Any]:
    calls: Counter[str] = Counter()
    s3.meta.events.register("before-call.s3.*", lambda model, **_: calls.update([model.name]))
    start, end = month_bounds(date(2021 + years // 2, 6, 1))
    history = History(s3, bucket)
    t0 = time.perf_counter()
    table = history.table(Query("safety.dispatch", start, end))
    elapsed = time.perf_counter() - t0
    assert table.num_rows == 30 * per_day, table.num_rows  # June: 30 days
    return {
        "month_retrieval_s": round(elapsed, 3),
        "month_retrieval_requests": sum(calls.values()),
        "month_retrieval_requests_by_kind": dict(calls),
        "month_rows": table.num_rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000, help="events for the throughput run")
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument(
        "--per-day", type=int, default=200, help="events per type per day in the lake"
    )
    parser.add_argument("--endpoint", default=os.environ.get("CITYRELAY_S3_ENDPOINT"))
    args = parser.parse_args()

    with ExitStack() as stack:
        if not args.endpoint:
            from moto import mock_aws

            os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
            stack.enter_context(mock_aws())
        tag = uuid4().hex[:8]
        results: dict[str, Any] = {"s3": args.endpoint or "moto (in-process)"}
        settings = lake.S3Settings(bucket=f"bench-archive-{tag}", endpoint_url=args.endpoint)
        s3 = settings.client()
        lake.ensure_buckets(s3, settings)
        results.update(bench_throughput(s3, settings.bucket, args.events))
        print(json.dumps(results), flush=True)
        lake_bucket = f"bench-lake-{tag}"
        s3.create_bucket(Bucket=lake_bucket)
        results.update(build_five_years(s3, lake_bucket, args.years, args.per_day))
        print(json.dumps(results), flush=True)
        results.update(bench_month(settings.client(), lake_bucket, args.years, args.per_day))
        results["years"] = args.years
        results["types"] = len(TYPES)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
