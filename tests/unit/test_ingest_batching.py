"""While the route workers are behind, ingest keeps gathering: bigger jobs, nothing held longer
than the workers would have made it wait (workers/batching.py)."""

from __future__ import annotations

import threading
import time

from rq import Queue

from city.events import Event, source_for
from queues.priority import HIGH, ROUTINE
from queues.streams import Producer
from workers.batching import BatchHolder, WorkersBehind
from workers.ingest import IngestWorker

WEST = {"lat": 47.6205, "lon": -122.3493}


def incidents(n: int) -> list[Event]:
    data = {"kind": "congestion", "severity": 2}
    return [
        Event.new("traffic.incident", source_for("sdot"), data, location=WEST) for _ in range(n)
    ]


def routine_ingest(redis, keys, seattle, wait_ms: int) -> IngestWorker:
    config, _ = seattle
    routing = config.routing.model_copy(update={"batch_max_ms": 20, "batch_max_wait_ms": wait_ms})
    return IngestWorker(
        redis, keys, config.model_copy(update={"routing": routing}), lanes=("routine",)
    )


def job_sizes(ingest: IngestWorker, name: str) -> list[int]:
    queue: Queue = ingest.queues[name]
    return [len(job.args[0]) for job in queue.jobs if job is not None]


def test_events_arriving_while_jobs_wait_ahead_join_one_bigger_job(redis, keys, seattle):
    ingest = routine_ingest(redis, keys, seattle, wait_ms=2000)
    redis.rpush(ingest.queues[HIGH].key, "a-job-no-worker-took-yet")  # every worker is busy
    producer = Producer(redis, "sdot", keys)
    producer.publish_many(incidents(10))
    later = threading.Timer(0.1, producer.publish_many, args=(incidents(15),))
    later.start()
    counters = ingest.gather(block_ms=100)
    later.join()
    assert counters["accepted"] == 25
    assert job_sizes(ingest, HIGH) == [25]


def test_a_batch_closes_at_batch_max_ms_when_no_job_waits(redis, keys, seattle):
    ingest = routine_ingest(redis, keys, seattle, wait_ms=2000)
    Producer(redis, "sdot", keys).publish_many(incidents(10))
    assert ingest.holder is not None
    assert not ingest.holder.behind.behind_for({HIGH})
    counters = ingest.gather(block_ms=100)
    assert counters["accepted"] == 10 and job_sizes(ingest, HIGH) == [10]


def test_only_jobs_of_the_same_or_a_higher_priority_count_as_ahead(redis, keys, seattle):
    ingest = routine_ingest(redis, keys, seattle, wait_ms=2000)
    behind = WorkersBehind(redis, ingest.queues)
    redis.rpush(ingest.queues[ROUTINE].key, "waiting")
    assert behind.behind_for({ROUTINE}) and behind.behind_for({"bulk"})
    assert not behind.behind_for({HIGH})  # a high job would start before the routine one
    assert not behind.behind_for({HIGH, ROUTINE})
    assert not behind.behind_for({"emergency"})  # never held: not a routine worker's queue


def test_the_hold_ends_when_the_workers_catch_up(redis, keys, seattle):
    ingest = routine_ingest(redis, keys, seattle, wait_ms=60_000)
    waiting = ingest.queues[HIGH].key
    redis.rpush(waiting, "a-job")
    holder = BatchHolder(WorkersBehind(redis, ingest.queues), limit=30, step_ms=1, wait_ms=60_000)
    Producer(redis, "sdot", keys).publish_many(incidents(40))
    reads: list[int] = []

    def read(count: int):
        reads.append(count)
        if len(reads) == 2:
            redis.lpop(waiting)  # a worker took the waiting job
        return ingest.streams.read(ingest.consumer, min(count, 5), None)

    entries = ingest.streams.read(ingest.consumer, 5, None)
    decoded = ingest._decode(entries)
    holder.hold(read, ingest._decode, ingest._queue_of, entries, decoded, opened=0.0)
    assert reads == []  # opened long ago: the wait was over before the first step
    holder.hold(read, ingest._decode, ingest._queue_of, entries, decoded, time.monotonic())
    assert reads == [25, 20] and len(entries) == len(decoded) == 15


def test_the_hold_ends_when_a_queue_batch_is_full(redis, keys, seattle):
    ingest = routine_ingest(redis, keys, seattle, wait_ms=60_000)
    redis.rpush(ingest.queues[HIGH].key, "a-job-that-stays")
    holder = BatchHolder(WorkersBehind(redis, ingest.queues), limit=30, step_ms=1, wait_ms=60_000)
    Producer(redis, "sdot", keys).publish_many(incidents(40))
    reads: list[int] = []

    def read(count: int):
        reads.append(count)
        return ingest.streams.read(ingest.consumer, min(count, 7), None)

    entries = ingest.streams.read(ingest.consumer, 5, None)
    decoded = ingest._decode(entries)
    holder.hold(read, ingest._decode, ingest._queue_of, entries, decoded, time.monotonic())
    assert len(entries) == 30  # never more than `limit` for one queue's job
    assert reads == [25, 18, 11, 4]
