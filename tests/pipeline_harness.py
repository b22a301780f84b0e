"""Drive the pipeline in-process: the same ingest code and RQ workers the processes run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from redis import Redis

from city.config import CityConfig
from city.routing import Router
from jobs.context import RouteContext
from queues.inbox import Inbox
from queues.keys import Keys
from workers.ingest import IngestWorker
from workers.worker import build_worker


class Harness:
    def __init__(self, redis: Redis, keys: Keys, config: CityConfig, base: Path, router: Router):
        self.redis = redis
        self.keys = keys
        self.config = config
        # As a worker process loads its context (RouteContext.load): every index built now, not
        # inside the first route job, where it counts against the job's timeout (5 s for an
        # emergency: on a loaded machine the build alone takes longer).
        router.jurisdictions.prepare()
        self.context = RouteContext(config=config, router=router, keys=keys)
        self.ingest = IngestWorker(redis, keys, config, consumer="ingest-a")

    def ingest_all(self) -> Counter:
        total: Counter = Counter()
        while True:
            step = self.ingest.step(block_ms=None)
            if not step:
                return total
            total.update(step)

    def work(self, role: str) -> None:
        worker = build_worker(
            self.redis, self.keys, role, self.context, name=f"{self.keys.prefix}-{role}"
        )
        worker.work(burst=True, logging_level="ERROR")

    def run(self) -> Counter:
        counters = self.ingest_all()
        self.work("emergency")
        self.work("routine")
        return counters

    def inbox_ids(self, dept: str) -> list[str]:
        return [m.event_id for m in Inbox(self.redis, dept, self.keys).history(100_000)]

    def deliveries(self) -> dict[str, list[str]]:
        return {d: self.inbox_ids(d) for d in self.config.department_ids if self.inbox_ids(d)}

    def deadletters(self) -> list[dict[str, str]]:
        return [
            {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
            for _, fields in self.redis.xrange(self.keys.deadletter)
        ]
