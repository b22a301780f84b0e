"""RQ worker processes: `cityrelay worker --role emergency|routine|archive`.

We run RQ's `SimpleWorker` (no fork per job): the route context - GeoJSON layers, prepared
geometry, compiled subscriptions - is loaded once per process and reused by every job, and an
emergency job starts in microseconds instead of paying for a fork. SIGTERM is a warm shutdown:
the current job finishes, then the process exits. Workers also run RQ's scheduler
(one holds the lock per queue), which re-queues failed jobs whose retry interval has passed.

Recovery from a worker killed mid-job (SIGKILL, OOM, power loss) is tuned here, because RQ's
defaults are made for long jobs and would leave an emergency waiting for minutes:
- a job's StartedJobRegistry entry expires `job.timeout + HEARTBEAT_MARGIN_S` after it started
  (RQ: timeout + 60 s); a SimpleWorker always finishes or times out a job before that, so only a
  dead worker's job expires. Route jobs have short timeouts (workers/ingest.py);
- every `MAINTENANCE_S` a worker re-queues expired jobs (RQ's `clean_registries`, which applies
  the job's Retry), and an idle worker wakes every `DEQUEUE_TIMEOUT_S` to do so;
- the queue, job and execution registry (workers/rq_queue.py): every job popped into RQ's
  intermediate list (LMOVE) by a multi-queue worker too, re-queued after `STUCK_S` when its
  worker died before starting it; a maintenance lock that expires in 30 s, not 15 minutes (a
  worker killed while cleaning stopped all recovery on its queues); a retried job's success
  that no longer fails on its dead run's expired execution (RQ 3 bug);
- the scheduler child process exits when its worker died (RQ leaves it orphaned, holding the
  scheduler lock): on Linux the kernel sends it SIGTERM when the worker dies (PR_SET_PDEATHSIG),
  elsewhere it notices within a second;
- SIGTERM stops a worker within seconds whatever the state of its Redis connections: RQ's
  command-channel thread is replaced by `CommandListener` (RQ 3's teardown could wait a whole
  minute for it, see there), and the teardown waits for the scheduler child a bounded time.
A job that runs twice delivers nothing twice: delivery is idempotent (queues/inbox.py); archive
jobs hold their own locks.

`run_worker` also survives a Redis outage: RQ's loop quits on a connection error outside its
dequeue call, so the process waits for Redis and starts a fresh worker.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import suppress
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job

from jobs.context import RouteContext, set_context
from queues.keys import Keys
from queues.priority import JSONWire, queues_for_role, register_queues
from workers.companions import CityScheduler, CommandListener
from workers.logs import Summary, job_counts
from workers.rq_queue import CityJob, CityQueue

log = logging.getLogger("cityrelay.worker")

# How often a worker re-queues jobs abandoned by a dead worker (and retries them).
MAINTENANCE_S = {"emergency": 2, "routine": 5, "escalation": 5}
DEFAULT_MAINTENANCE_S = 60
# Registry entry of a running job: job timeout + this. Covers the bookkeeping after the job.
HEARTBEAT_MARGIN_S = 5
# An idle worker's blocking pop returns this often, so it runs its maintenance on time.
DEQUEUE_TIMEOUT_S = 2
# A standalone heartbeat is skipped within this long of the last one, if that one's TTL has
# more than the slack left (so a worker key never comes near expiring).
HEARTBEAT_SKIP_S, HEARTBEAT_SLACK_S = 1.0, 4.0
# A stopping worker waits this long for its command thread and its scheduler child.
STOP_WAIT_S = 5.0


class CityWorker(SimpleWorker):
    """RQ's SimpleWorker with fast, safe recovery of abandoned jobs (see the module doc), and
    tolerant of servers whose CLIENT INFO reply redis-py cannot parse (the embedded fakeredis
    stand-in): the address is only shown in `rq info`."""

    queue_class = CityQueue
    job_class = CityJob
    stop_signalled = False  # RQ only records a stop request that arrives during a job

    def _set_connection(self, connection: Redis) -> Redis:
        # RQ raises the socket timeout above its blocking pop through `connection_pool`; a
        # cluster client has a pool per node and gets its timeout where it is built instead.
        if isinstance(connection, RedisCluster):
            return connection
        return super()._set_connection(connection)

    def request_stop(self, signum: Any, frame: Any) -> None:
        self.stop_signalled = True
        super().request_stop(signum, frame)

    summary: Summary | None = None  # set by `build_worker`: one INFO line per interval

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        ok = super().perform_job(job, queue, execution)
        if self.summary is not None:
            self.summary.add(job_counts(job, ok), queue=queue.name, job=job.id)
            self.summary.tick()
        return ok

    command_listener: CommandListener | None = None  # in place of RQ's pubsub_thread

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.command_listener = CommandListener(self.pubsub, self.name)
        self.command_listener.start()

    def unsubscribe(self) -> None:
        listener = self.command_listener
        if listener is None:
            return
        if not listener.stop(STOP_WAIT_S):  # reconnecting to a Redis that does not answer
            log.warning("command channel still busy after %s s; exiting without it", STOP_WAIT_S)

    def stop_scheduler(self) -> None:
        """RQ's, with a bounded wait: SIGTERM, then SIGKILL after STOP_WAIT_S (a scheduler
        releasing its locks on a Redis that does not answer; they expire by themselves)."""
        process = self.scheduler._process if self.scheduler is not None else None
        if process is None or not process.pid or process.exitcode is not None:
            return  # none, or already stopped (and reaped: its pid may be another's now)
        with suppress(OSError):  # already gone
            os.kill(process.pid, signal.SIGTERM)
        process.join(STOP_WAIT_S)
        if process.is_alive():
            log.warning(
                "scheduler %s still running %s s after SIGTERM: killed", process.pid, STOP_WAIT_S
            )
            process.kill()
            process.join()

    def _set_ip_address(self, connection: Redis) -> None:
        try:
            super()._set_ip_address(connection)
        except (ValueError, ResponseError):
            self.ip_address = "unknown"

    _beat_at = float("-inf")  # monotonic time of the last heartbeat
    _beat_until = 0.0  # ...and when the TTL it set runs out

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat, in fewer round trips: RQ sends a standalone one (HSET and two
        EXPIREs, three round trips) three times per job - one between the pop and the job,
        on an emergency's path. A standalone one is skipped while the last one (in a job's
        preparation pipeline, say) is under `HEARTBEAT_SKIP_S` old and its TTL has more than
        `HEARTBEAT_SLACK_S` to run; the others go in one pipeline."""
        ttl = timeout or self.worker_ttl + 60
        now_s = time.monotonic()
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
        elif (
            timeout is None
            and now_s - self._beat_at < HEARTBEAT_SKIP_S
            and self._beat_until - now_s > HEARTBEAT_SLACK_S
        ):
            return
        else:
            with self.connection.pipeline(transaction=False) as pipe:
                super().heartbeat(timeout, pipe)
                pipe.execute()
        self._beat_at, self._beat_until = now_s, now_s + ttl

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """RQ writes the state ``idle`` twice per job (after it, before the next pop): the
        second write of an unchanged state is skipped (only this worker writes it)."""
        if pipeline is None and state == self._state:
            return
        super().set_state(state, pipeline)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        if job.timeout is None or job.timeout < 0:
            return super().get_heartbeat_ttl(job, working_time)
        return int(job.timeout) + HEARTBEAT_MARGIN_S

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        # Every pop goes through the intermediate list here, not only single-queue ones.
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = "",
        log_format: str = "",
    ) -> None:
        # RQ's _start_scheduler with our scheduler class.
        self.scheduler = CityScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()
        if not self.scheduler.acquired_locks:
            if burst:  # see below
                self.scheduler = None
            return
        if burst:
            try:
                self.scheduler.register_birth()
                self.scheduler.enqueue_scheduled_jobs()
            finally:
                self.scheduler.release_locks()
                self.scheduler.register_death()
            # A burst worker enqueues the due jobs once. RQ keeps the scheduler, and its
            # maintenance (a job outlasting maintenance_interval) then forked a scheduler child
            # that the teardown SIGTERMs, maybe before its handlers: the lock held for 61 s.
            self.scheduler = None
        else:
            self.scheduler.start()


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
        [CityQueue(q.name, connection=redis, serializer=JSONWire) for q in queues],
        connection=redis,
        serializer=JSONWire,  # orjson: a 500-event job decodes ~4x faster than with json
        name=name,
        maintenance_interval=MAINTENANCE_S.get(role, DEFAULT_MAINTENANCE_S),
        # RQ blocks an idle worker for worker_ttl - 15 s between maintenance checks.
        worker_ttl=DEQUEUE_TIMEOUT_S + 15,
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
    """Work until SIGTERM (or the queues are empty with `burst`). If RQ's loop ends on a
    Redis outage, wait for Redis and carry on with a fresh worker (under a new name: the old
    one's registration may outlive it)."""
    logging.getLogger("rq.worker").setLevel(log_level)
    worked = False
    generation = 0
    backoff = 0.2
    stop = threading.Event()
    while not stop.is_set():
        worker_name = name if generation == 0 or name is None else f"{name}.{generation}"
        worker: CityWorker | None = None
        ticking: threading.Event | None = None
        began = time.monotonic()
        try:
            worker = build_worker(redis, keys, role, context, worker_name)
            assert worker.summary is not None
            ticking = worker.summary.every_interval()  # a summary line per interval
            worked = (
                worker.work(burst=burst, logging_level=log_level, with_scheduler=True) or worked
            )
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("redis unavailable (%s); a fresh worker starts once it answers", exc)
        else:
            if burst:
                return worked
        finally:
            if worker is not None and worker.summary is not None and ticking is not None:
                ticking.set()
                worker.summary.flush()
        if worker is not None and (worker.stop_signalled or worker._stop_requested):
            return worked
        # Between two workers a SIGTERM/SIGINT just ends the process.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        log.warning("the worker loop ended without a stop request; starting a fresh worker")
        generation += 1
        if time.monotonic() - began > 60:  # it had been working: a fresh outage
            backoff = 0.2
        stop.wait(backoff)
        backoff = min(backoff * 2, 5.0)  # a loop that keeps ending slows down
        while not stop.is_set() and not _redis_answers(redis):
            stop.wait(0.5)
    return worked


def _redis_answers(redis: Redis) -> bool:
    try:
        return bool(redis.ping())
    except (RedisConnectionError, RedisTimeoutError):
        return False
