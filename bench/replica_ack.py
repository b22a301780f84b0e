"""What the producer's replica acknowledgement costs: publish with and without
``Producer(min_replicas=1)`` (XADDs + ``WAIT 1 T`` in one pipeline) to a local redis-server
primary with one replica on the same host.

    PYTHONPATH=. python bench/replica_ack.py [--events 20000] [--batch 500]

Prints one JSON object: events per second and milliseconds per publish call, for single-event
publishes and for batches, with min_replicas 0 and 1, plus the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from city.events import Event, source_for  # noqa: E402
from queues.keys import Keys  # noqa: E402
from queues.streams import Producer  # noqa: E402
from workers.standins import LocalRedisServer  # noqa: E402


def incidents(count: int) -> list[Event]:
    return [
        Event.new(
            "traffic.incident",
            source_for("sdot"),
            {"kind": "collision", "severity": 2},
            location={"lat": 47.6205, "lon": -122.3493},
        )
        for _ in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    primary = LocalRedisServer().start()
    replica = LocalRedisServer(replicaof=("127.0.0.1", primary.port)).start()
    try:
        client = primary.client()
        while int(client.wait(1, 100)) < 1:  # the replica's initial sync
            client.set("bench:probe", 1)
        report: dict[str, object] = {}
        for min_replicas in (0, 1):
            for batch, total in ((1, args.events // 10), (args.batch, args.events)):
                keys = Keys(f"bench{min_replicas}x{batch}")
                producer = Producer(client, "sdot", keys, min_replicas=min_replicas)
                events = incidents(total)
                started = time.perf_counter()
                for i in range(0, total, batch):
                    producer.publish_many(events[i : i + batch])
                took = time.perf_counter() - started
                report[f"min_replicas={min_replicas},batch={batch}"] = {
                    "events": total,
                    "events_per_s": round(total / took),
                    "ms_per_publish": round(took * 1000 / (total / batch), 3),
                }
        report["loadavg_1m"] = os.getloadavg()[0]
        print(json.dumps(report))
    finally:
        replica.stop()
        primary.stop()


if __name__ == "__main__":
    main()
