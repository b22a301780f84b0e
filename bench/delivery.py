"""The delivery script on its own: Redis CPU and client CPU per event, on recorded batches.

Routes `--events` events of bench/pipeline.py's mix once (as bench/profile_batch.py does) and
records every batch the route job hands the `Deliverer`; then delivers those batches again
`--rounds` times under fresh dedupe markers, measuring the Redis server's CPU (`INFO cpu`) and
this process's CPU per event. The same recorded work each time, so a change to the script or to
how its arguments are built is compared on equal terms; run it on a Redis of your own
(`REDIS_URL`), since the server's CPU counts everyone's commands.

    REDIS_URL=redis://127.0.0.1:6399/0 python bench/delivery.py [--events 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402

from bench.pipeline import config_file, routine_event  # noqa: E402
from bench.profile_batch import recorded_batches, redis_cpu_s  # noqa: E402
from jobs.context import RouteContext, set_context  # noqa: E402
from jobs.route import deliver_items  # noqa: E402
from queues.cleanup import delete_city  # noqa: E402
from queues.inbox import AuditFrame, Deliverer, EventDelivery, Output  # noqa: E402
from queues.keys import Keys  # noqa: E402
from queues.streams import EVENT_FIELD  # noqa: E402
from workers.ingest import IngestWorker  # noqa: E402

Recorded = list[tuple[list[EventDelivery], AuditFrame | None]]


def record(redis: Redis, redis_url: str, keys: Keys, events: int) -> tuple[Recorded, Deliverer]:
    """Ingest and route `events` events once; the batches the Deliverer was given."""
    path = config_file(500)
    try:
        context = RouteContext.load(path, keys, redis_url)
        set_context(context)
        ingest = IngestWorker(redis, keys, context.config)
        rng = random.Random(1)
        pipe = redis.pipeline(transaction=False)
        for n in range(events):
            dept, body = routine_event(rng, n)
            pipe.xadd(keys.ingest(dept), {EVENT_FIELD: body.replace(b"@ID@", b"d-%d" % n)})
        pipe.execute()
        while ingest.step():
            pass
        recorded: Recorded = []
        deliverer = context.deliverer(redis)
        real = deliverer.deliver

        def keep(batch: Sequence[EventDelivery], audit: AuditFrame | None = None) -> Any:
            recorded.append((list(batch), audit))
            return real(batch, audit)

        deliverer.deliver = keep  # type: ignore[method-assign]
        for items in recorded_batches(redis, keys):
            deliver_items(context, redis, items, batch_id="delivery-bench")
        deliverer.deliver = real  # type: ignore[method-assign]
        return recorded, deliverer
    finally:
        path.unlink()


def fresh(recorded: Recorded, tag: str) -> Recorded:
    """The same batches under new dedupe markers (so every event is delivered again)."""
    return [
        (
            [
                EventDelivery(
                    seen_key=f"{d.seen_key}:{tag}",
                    outputs=[Output(o.key, o.fields, o.items) for o in d.outputs],
                    audit_rows=d.audit_rows,
                    counts=d.counts,
                )
                for d in batch
            ],
            audit,
        )
        for batch, audit in recorded
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    redis = Redis.from_url(redis_url)
    keys = Keys(f"dlv{uuid.uuid4().hex[:8]}")
    try:
        recorded, deliverer = record(redis, redis_url, keys, args.events)
        events = sum(len(batch) for batch, _ in recorded)
        redis_s = client_s = 0.0
        for _ in range(args.rounds):
            work = fresh(recorded, uuid.uuid4().hex[:6])
            r0, c0 = redis_cpu_s(redis), time.process_time()
            for batch, audit in work:
                deliverer.deliver(batch, audit)
            redis_s += redis_cpu_s(redis) - r0
            client_s += time.process_time() - c0
        delivered = events * args.rounds
        print(
            json.dumps(
                {
                    "events": events,
                    "rounds": args.rounds,
                    "redis_us_per_event": round(redis_s * 1e6 / delivered, 1),
                    "client_us_per_event": round(client_s * 1e6 / delivered, 1),
                    "load_average": os.getloadavg()[0],
                }
            )
        )
    finally:
        delete_city(redis, keys)


if __name__ == "__main__":
    main()
