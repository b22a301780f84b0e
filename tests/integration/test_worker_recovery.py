"""A worker that dies holding a job: the job runs again within seconds, not minutes; nothing
of the dead worker lingers."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from rq import Retry
from rq.job import Job
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer

from bench.chaos import Pipeline
from queues.priority import BULK, EMERGENCY, HIGH, make_queue
from tests.conftest import write_city
from workers.rq_queue import CityQueue
from workers.worker import HEARTBEAT_MARGIN_S, build_worker

pytestmark = pytest.mark.integration


def _enqueue(redis, keys, queue: str, job_id: str, timeout: int = 1):
    # time.sleep(0): a job any process can import and run.
    return make_queue(redis, keys, queue).enqueue(
        "time.sleep", 0, job_id=job_id, job_timeout=timeout, result_ttl=60,
        retry=Retry(max=2),
    )  # fmt: skip


def test_routine_pop_takes_the_highest_queue_and_keeps_the_job_in_the_intermediate_list(
    redis, keys
):
    _enqueue(redis, keys, BULK, f"{keys.prefix}-bulk")
    _enqueue(redis, keys, HIGH, f"{keys.prefix}-high")
    queues = [
        CityQueue(make_queue(redis, keys, name).name, connection=redis) for name in (HIGH, BULK)
    ]
    job, queue = CityQueue.dequeue_any(queues, None, connection=redis)
    assert job.id == f"{keys.prefix}-high" and queue.name == queues[0].name
    # Popped, not started: a worker dying now leaves it where maintenance finds it.
    assert redis.lrange(queues[0].intermediate_queue_key, 0, -1) == [job.id.encode()]


def test_a_job_abandoned_by_a_dead_worker_runs_again_within_seconds(redis, keys):
    job = _enqueue(redis, keys, EMERGENCY, f"{keys.prefix}-em", timeout=1)
    dead = build_worker(redis, keys, "emergency", name=f"{keys.prefix}-dead")
    dead.register_birth()
    popped, queue = dead.dequeue_job_and_maintain_ttl(timeout=1)
    dead.prepare_execution(popped)  # ...and the process is SIGKILLed here
    dead.prepare_job_execution(popped)
    assert job.id in queue.started_job_registry.get_job_ids(cleanup=False)

    started = time.monotonic()
    survivor = build_worker(redis, keys, "emergency", name=f"{keys.prefix}-alive")
    while time.monotonic() - started < 1 + HEARTBEAT_MARGIN_S + 10:
        survivor.work(burst=True)  # maintenance first, then whatever is queued
        if Job.fetch(popped.id, connection=redis, serializer=JSONSerializer).is_finished:
            break
        time.sleep(0.5)
    else:  # RQ alone: its registry entry expires after timeout + 60 s, then waits for a pass
        pytest.fail("the abandoned job was not run again within 16 s")
    assert queue.failed_job_registry.count == 0


def test_a_killed_workers_scheduler_process_exits_and_frees_its_lock(
    redis_url, redis, keys, tmp_path
):
    pipeline = Pipeline(redis_url, keys.prefix, write_city(tmp_path), 0, 1)
    lock = RQScheduler.get_locking_key(make_queue(redis, keys, HIGH).name)
    try:
        pipeline.start("routine-0")
        worker = pipeline.running["routine-0"]
        deadline = time.monotonic() + 60
        while not redis.exists(lock):  # the worker is up and its scheduler child holds the lock
            assert time.monotonic() < deadline, "the worker's scheduler never took its lock"
            time.sleep(0.2)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        # It checks once a second; the margin is for a loaded CI machine.
        deadline = time.monotonic() + 30
        while _group_alive(worker.pid) or redis.exists(lock):
            assert time.monotonic() < deadline, "the scheduler outlived its worker"
            time.sleep(0.2)
    finally:
        pipeline.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_kernel_tells_a_scheduler_process_at_once_that_its_worker_died(
    redis_url, redis, keys, tmp_path
):
    """Not a race with the scheduler's once-a-second look at its parent: it is frozen (SIGSTOP)
    when its worker is SIGKILLed, so only a signal sent at the worker's death can be waiting
    for it; thawed, it stops and frees its lock."""
    pipeline = Pipeline(redis_url, keys.prefix, write_city(tmp_path), 0, 1)
    lock = RQScheduler.get_locking_key(make_queue(redis, keys, HIGH).name)
    try:
        pipeline.start("routine-0")
        worker = pipeline.running["routine-0"]
        scheduler = _registered_scheduler_child(redis, worker.pid)
        os.kill(scheduler, signal.SIGSTOP)
        _wait_for(lambda: _proc_stat(scheduler)[0] == "T", "the scheduler frozen")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        assert _pending_signals(scheduler) & (1 << (signal.SIGTERM - 1)), "no SIGTERM waiting"
        os.kill(scheduler, signal.SIGCONT)
        _wait_for(lambda: not _alive(scheduler) and not redis.exists(lock), "scheduler gone", 30)
    finally:
        pipeline.stop()


def _wait_for(check, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.05)


def _proc_stat(pid: int) -> tuple[str, int]:
    """(state, parent pid) from /proc/{pid}/stat; ("", 0) once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return "", 0
    return fields[0], int(fields[1])


def _pending_signals(pid: int) -> int:
    mask = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")):
            mask |= int(line.split()[1], 16)
    return mask


def _alive(pid: int) -> bool:
    return _proc_stat(pid)[0] not in ("", "Z")


def _registered_scheduler_child(redis, worker_pid: int) -> int:  # type: ignore[no-untyped-def]
    """The pid of the worker's scheduler child, once it has registered its birth (after it
    asked for the signal)."""
    found: list[int] = []

    def registered() -> bool:
        children = {
            int(entry.name)
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and _proc_stat(int(entry.name))[1] == worker_pid
        }
        for key in redis.scan_iter("rq:scheduler:*", count=1000):
            pid = redis.hget(key, "pid")
            if pid is not None and int(pid) in children:
                found.append(int(pid))
                return True
        return False

    _wait_for(registered, "the worker's scheduler child registered")
    return found[0]


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
