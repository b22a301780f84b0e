"""RQ's job, queue and execution registry as our workers use them: safe for a worker killed
at any moment (the recovery the worker module describes).

- every job is popped into RQ's intermediate list (LMOVE), also by routine workers that listen
  to several queues (RQ pops those with a plain BLPOP: a worker killed between the pop and the
  StartedJobRegistry write would lose the job); a job left there by a dead worker is re-queued
  after `STUCK_S` instead of RQ's minute;
- the per-queue maintenance lock expires after `MAINTENANCE_LOCK_S` (RQ: 899 s);
- a retried job's success no longer fails on its dead run's expired execution (RQ 3 bug).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import DequeueTimeout
from rq.executions import Execution, ExecutionRegistry
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.utils import as_text, current_timestamp, now

from queues.priority import WireJob

# A job popped but never started (its worker died in between) is re-queued after this.
STUCK_S = 5
MAINTENANCE_LOCK_S = 30
# Routine workers poll their queues (one script call for all of them) when idle.
POLL_MIN_S, POLL_MAX_S = 0.005, 0.05

# LMOVE from the first non-empty queue into its intermediate list: KEYS = queue, list, ...
_POP_FIRST = """
for i = 1, #KEYS, 2 do
  local job_id = redis.call('LMOVE', KEYS[i], KEYS[i + 1], 'LEFT', 'RIGHT')
  if job_id then return {KEYS[i], job_id} end
end
return false
"""


class TolerantExecutionRegistry(ExecutionRegistry):
    """RQ 3 keeps a job's execution ids 60 s longer than the executions themselves. After a
    dead worker's run expired and the job was retried, the successful retry's cleanup fetched
    the expired run, raised, and failed the job (its work done) until retries ran out.

    Also in two round trips instead of one per execution plus two: RQ reads a job's executions
    twice while it finishes the job, and every round trip lengthens an emergency worker's cycle.
    """

    def get_executions(self, start: int = 0, end: int = -1) -> list[Execution]:
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self.key, 0, current_timestamp())  # RQ's cleanup()
            pipe.zrange(self.key, start, end)
            ids = [as_text(i) for i in pipe.execute()[1]]
        if not ids:
            return []
        executions = [Execution(id=i, job_id=self.job_id, connection=self.connection) for i in ids]
        with self.connection.pipeline(transaction=False) as pipe:
            for execution in executions:
                pipe.hgetall(execution.key)
            hashes = pipe.execute()
        found = []
        for execution, data in zip(executions, hashes, strict=True):
            if data:  # else expired with its dead worker
                execution.restore(data)
                found.append(execution)
        return found


class CityJob(WireJob):
    popped_at: float | None = None  # when the worker's pop returned it (queues/trace.py)

    @property
    def execution_registry(self) -> ExecutionRegistry:
        return TolerantExecutionRegistry(self.id, connection=self.connection)


class CityIntermediateQueue(IntermediateQueue):
    def should_be_cleaned_up(self, job_id: str) -> bool:
        first_seen = self.get_first_seen(job_id)
        return first_seen is not None and now() - first_seen > timedelta(seconds=STUCK_S)


class CityQueue(Queue):
    """RQ's Queue with a safe multi-queue pop and a maintenance lock that expires soon."""

    job_class = CityJob

    @property
    def intermediate_queue(self) -> IntermediateQueue:
        return CityIntermediateQueue(self.key, connection=self.connection)

    def acquire_maintenance_lock(self) -> bool:
        return bool(
            self.connection.set(self.registry_cleaning_key, 1, nx=True, ex=MAINTENANCE_LOCK_S)
        )

    @classmethod
    def dequeue_any(  # type: ignore[override]
        cls,
        queues: Iterable[Queue],
        timeout: int | None,
        connection: Redis,
        job_class: type[Job] | None = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> tuple[Job, Queue] | None:
        queues = list(queues)
        if len(queues) == 1:  # RQ's own BLMOVE into the intermediate list
            found = super().dequeue_any(
                queues, timeout, connection, job_class, serializer, death_penalty_class
            )
            if found is not None and isinstance(found[0], CityJob):
                found[0].popped_at = time.time()
            return found
        keys: list[str] = []
        for queue in queues:
            keys += [queue.key, IntermediateQueue.get_intermediate_queue_key(queue.key)]
        pop = connection.register_script(_POP_FIRST)
        deadline = time.monotonic() + timeout if timeout is not None else None
        pause = POLL_MIN_S
        while True:
            result = pop(keys=keys)
            if result:
                queue_key, job_id = (v.decode() if isinstance(v, bytes) else v for v in result)
                dequeued = cls._fetch_dequeued_job(
                    connection, queue_key, job_id, job_class, serializer, death_penalty_class
                )
                if dequeued is not None:
                    if isinstance(dequeued[0], CityJob):
                        dequeued[0].popped_at = time.time()
                    return dequeued
                continue
            if deadline is None:
                return None
            if time.monotonic() >= deadline:
                raise DequeueTimeout(timeout, keys[::2])
            time.sleep(pause)
            pause = min(pause * 2, POLL_MAX_S)
