"""Emergency-path building blocks: CAP parse/render rates, spool append and replay rates.

Prints JSON; the last line is one object with the contract keys. Needs Redis at $REDIS_URL
(default 127.0.0.1:6379) for the replay figure; uses a unique key prefix and deletes its keys.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from uuid import uuid4

from city.cap import event_to_cap, events_from_cap
from queues.connect import redis_from_url
from queues.spool import Spool

DATA = Path(__file__).parents[1] / "tests" / "data" / "cap"


def per_second(fn, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(operations per second, p99 latency in ms) over n calls."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n / sum(times), statistics.quantiles(times, n=100)[98] * 1000


def main() -> None:
    alert = (DATA / "v1dot2_appendix_adot2.xml").read_bytes()
    events_from_cap(alert)  # compile the schema once, as a long-running worker would
    parse_rate, parse_p99 = per_second(lambda: events_from_cap(alert), 2000)
    (event,) = events_from_cap(alert)
    render_rate, render_p99 = per_second(lambda: event_to_cap(event), 2000)

    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(Path(tmp) / "bench.db")
        fields = {"event": json.dumps(event.to_wire())}
        n = 2000
        append_rate, append_p99 = per_second(
            lambda: spool.append("b:ingest:oem:emergency", fields, event_id=uuid4().hex), n
        )
        prefix = f"bench{uuid4().hex[:8]}"
        redis = redis_from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        spool_b = Spool(Path(tmp) / "replay.db")
        spool_b.append_many([(f"{prefix}:ingest:oem", fields, uuid4().hex) for _ in range(20_000)])
        t = time.perf_counter()
        replayed = spool_b.replay(redis, batch=500)
        replay_rate = replayed / (time.perf_counter() - t)
        redis.delete(*redis.scan_iter(match=f"{prefix}:*", count=5000))
        spool.close()
        spool_b.close()

    result = {
        "cap_parse_per_s": round(parse_rate),
        "cap_parse_p99_ms": round(parse_p99, 3),
        "cap_render_per_s": round(render_rate),
        "cap_render_p99_ms": round(render_p99, 3),
        "spool_append_per_s": round(append_rate),
        "spool_append_p99_ms": round(append_p99, 3),
        "spool_replay_per_s": round(replay_rate),
        "spool_replayed": replayed,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
