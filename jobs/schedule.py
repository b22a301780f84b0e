"""Scheduling the archive and disposition jobs with RQ 3's cron scheduler.

Exactly one scheduler enqueues: each scheduler process must hold a lease in Redis
(``Keys.scheduler_lease``, renewed on every heartbeat); a second process waits as a standby
and takes over when the lease lapses. Jobs are enqueued with RQ's JSON serializer (never
pickle) on the ``{prefix}.archive`` queue, which the archive worker role drains. Even if two
schedulers ever overlapped, the jobs stay safe: archive windows and disposition runs are locked.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from redis import Redis
from rq import Queue
from rq import cron_job_registry as _cron_job_registry
from rq.cron import CronJob, CronScheduler
from rq.defaults import DEFAULT_CRON_JOB_HISTORY_LIMIT, DEFAULT_CRON_JOB_HISTORY_TTL
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs.archive import archive_job
from jobs.disposition import disposition_job
from queues.keys import Keys

ARCHIVE_QUEUE = "archive"
LEASE_S = 180
DEFAULT_ARCHIVE_EVERY_S = 300
DEFAULT_DISPOSE_CRON = "17 3 * * *"  # daily, at a quiet hour


def archive_queue_name(keys: Keys) -> str:
    """Same naming as the other RQ queues: ``{prefix}.archive``."""
    return f"{keys.rq_prefix}.{ARCHIVE_QUEUE}"


class JsonCronJob(CronJob):
    """A cron job enqueued with the JSON serializer (RQ's own CronJob uses the default, pickle)."""

    def enqueue(self, connection: Redis) -> Job:
        assert self.func is not None  # registered with a function, never restored from Redis
        queue = Queue(self.queue_name, connection=connection, serializer=JSONSerializer)
        with connection.pipeline() as pipeline:
            job = queue.enqueue(
                self.func, args=self.args, kwargs=self.kwargs, **self.job_options, pipeline=pipeline
            )
            assert job.enqueued_at is not None
            pipeline.zadd(self.job_history_key, {job.id: job.enqueued_at.timestamp()})
            pipeline.zremrangebyrank(self.job_history_key, 0, -(DEFAULT_CRON_JOB_HISTORY_LIMIT + 1))
            pipeline.expire(self.job_history_key, DEFAULT_CRON_JOB_HISTORY_TTL)
            _cron_job_registry.add(
                self.name, pipeline, enqueue_timestamp=job.enqueued_at.timestamp()
            )
            pipeline.execute()
        return job


class LeasedCronScheduler(CronScheduler):
    """A CronScheduler that only runs while it holds the city's scheduler lease."""

    def __init__(self, connection: Redis, keys: Keys, **kwargs: Any):
        super().__init__(connection, **kwargs)
        self.keys = keys
        self.token = uuid.uuid4().hex

    def register(self, func: Any, queue_name: str, **kwargs: Any) -> CronJob:  # type: ignore[override]
        job = JsonCronJob(queue_name=queue_name, func=func, **kwargs)
        self._cron_jobs.append(job)
        return job

    def try_lease(self) -> bool:
        """Take or renew the lease; False when another scheduler holds it."""
        key = self.keys.scheduler_lease
        if self.connection.set(key, self.token, nx=True, ex=LEASE_S):
            return True
        held = self.connection.get(key)
        if _text(held) == self.token:
            self.connection.expire(key, LEASE_S)
            return True
        return False

    def wait_for_lease(self, poll_s: float = 10.0, max_wait_s: float | None = None) -> bool:
        """Block as a standby until the lease is ours (or `max_wait_s` passes)."""
        waited = 0.0
        while not self.try_lease():
            if max_wait_s is not None and waited >= max_wait_s:
                return False
            time.sleep(poll_s)
            waited += poll_s
        return True

    def heartbeat(self) -> None:
        if not self.try_lease():
            self.log.warning("CronScheduler %s: lost the scheduler lease; stopping", self.name)
            raise StopRequested()
        super().heartbeat()

    def release_lease(self) -> None:
        held = self.connection.get(self.keys.scheduler_lease)
        if _text(held) == self.token:
            self.connection.delete(self.keys.scheduler_lease)


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def build_scheduler(
    redis: Redis,
    keys: Keys,
    archive_every_s: int = DEFAULT_ARCHIVE_EVERY_S,
    dispose_cron: str = DEFAULT_DISPOSE_CRON,
) -> LeasedCronScheduler:
    """The scheduler with the archive job (every N seconds) and disposition (cron) registered."""
    scheduler = LeasedCronScheduler(redis, keys)
    queue = archive_queue_name(keys)
    scheduler.register(
        archive_job,
        queue,
        args=(keys.prefix,),
        interval=archive_every_s,
        job_timeout=3600,
        name=f"{keys.name}:archive",
    )
    scheduler.register(
        disposition_job,
        queue,
        args=(keys.prefix,),
        cron=dispose_cron,
        job_timeout=6 * 3600,
        name=f"{keys.name}:disposition",
    )
    return scheduler


def run_scheduler(scheduler: LeasedCronScheduler, poll_s: float = 10.0) -> None:  # pragma: no cover
    """The `cityrelay scheduler` process: wait for the lease, then run until stopped."""
    scheduler.wait_for_lease(poll_s)
    try:
        scheduler.start()
    finally:
        scheduler.release_lease()
