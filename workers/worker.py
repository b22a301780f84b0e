"""RQ worker processes: `cityrelay worker --role emergency|routine|archive`.

We run RQ's `SimpleWorker` (no fork per job): the route context - GeoJSON layers, prepared
geometry, compiled subscriptions - is loaded once per process and reused by every job, and an
emergency job starts in microseconds instead of paying for a fork. SIGTERM is a warm shutdown:
the current job finishes, then the process exits. Workers also run RQ's scheduler
(one holds the lock per queue), which re-queues failed jobs whose retry interval has passed.
"""

from __future__ import annotations

import logging

from redis import Redis
from redis.exceptions import ResponseError
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs.context import RouteContext, set_context
from queues.keys import Keys
from queues.priority import queues_for_role, register_queues
from workers.logs import Summary, job_counts

# How often a worker looks for jobs abandoned by a dead worker (and retries them): an emergency
# must not wait RQ's default ten minutes.
MAINTENANCE_S = {"emergency": 15, "routine": 60}


class CityWorker(SimpleWorker):
    """RQ's SimpleWorker, tolerant of servers whose CLIENT INFO reply redis-py cannot parse
    (the embedded fakeredis stand-in): the address is only shown in `rq info`."""

    summary: Summary | None = None  # set by `build_worker`: one INFO line per interval

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        ok = super().perform_job(job, queue, execution)
        if self.summary is not None:
            self.summary.add(job_counts(job, ok), queue=queue.name, job=job.id)
            self.summary.tick()
        return ok

    def _set_ip_address(self, connection: Redis) -> None:
        try:
            super()._set_ip_address(connection)
        except (ValueError, ResponseError):
            self.ip_address = "unknown"


def build_worker(
    redis: Redis,
    keys: Keys,
    role: str,
    context: RouteContext | None = None,
    name: str | None = None,
) -> CityWorker:
    if context is not None:
        set_context(context)
    queues = queues_for_role(redis, keys, role)
    register_queues(redis, queues)
    worker = CityWorker(
        queues,
        connection=redis,
        serializer=JSONSerializer,
        name=name,
        maintenance_interval=MAINTENANCE_S.get(role, 600),
    )
    worker.summary = Summary(
        logging.getLogger(f"cityrelay.worker.{role}"),
        "worker summary",
        fields=("jobs", "failed", "delivered"),
    )
    return worker


def run_worker(
    redis: Redis,
    keys: Keys,
    role: str,
    context: RouteContext | None = None,
    burst: bool = False,
    name: str | None = None,
    log_level: str = "WARNING",
) -> bool:
    worker = build_worker(redis, keys, role, context, name)
    logging.getLogger("rq.worker").setLevel(log_level)
    assert worker.summary is not None
    ticking = worker.summary.every_interval()  # a summary line per interval, busy or idle
    try:
        return worker.work(burst=burst, logging_level=log_level, with_scheduler=True)
    finally:
        ticking.set()
        worker.summary.flush()
