"""The ingest process: department streams -> validated, deduplicated, prioritised RQ jobs.

One loop step:
1. XREADGROUP every department's streams (emergency lane first) and keep reading until the
   micro-batch is full (`batch_max_events`) or `batch_max_ms` passed since its first entry;
   an emergency closes the batch at once.
2. Validate each entry (`EventCatalog.accept`; a raw CAP alert becomes one event per info
   block first, queues/ingest_decode.py). Refused entries go to the dead-letter stream with the
   reason and the original bytes.
3. Dedupe by event id: ``SET seen:{dept}:{id} <entry id> NX GET`` (one script call per
   batch, queues/dedupe.py). A marker holding this very
   entry's id means a redelivery after a crash, which must go through; any other value is a
   duplicate publish.
4. In ONE transaction: enqueue emergencies one job each on ``emergency`` (one per entry: a CAP
   alert's emergency infos travel together) and the rest as micro-batches on
   ``high``/``routine``/``bulk``, write dead letters, XACK everything handled.
   So an entry is acknowledged exactly when its next hop holds it.

Entries read by a consumer that died are reclaimed after `claim_idle_ms` (the emergency lane's after
`emergency_claim_idle_ms`); one delivered more than
`max_deliveries` times is dead-lettered as poison instead of circulating forever. The same pass
trims what every consumer group has acknowledged from the streams, and about once a second the
loop checks Redis memory and raises or lowers producer backpressure (queues/limits.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MasterDownError, OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, Retry

from city.catalog import EventCatalog, InvalidEvent
from city.config import CityConfig
from jobs.route import route_batch
from queues.dedupe import SeenMarkers
from queues.ingest_decode import dead_letter_body, decode_entry
from queues.keys import Keys
from queues.limits import MemoryGuard
from queues.metrics import in_key, record_counts
from queues.partition import home_departments
from queues.priority import BULK, EMERGENCY, HIGH, QUEUE_FOR_PRIORITY, ROUTINE, make_queue
from queues.snapshot import ingest_backlog
from queues.streams import LANES, Entry, IngestStreams, consumer_name, dead_letter
from queues.trace import enabled as tracing
from queues.trace import now_ms
from queues.trace import record as trace
from workers.batching import BatchHolder, Decoded, WorkersBehind
from workers.logs import Summary

log = logging.getLogger("cityrelay.ingest")

# Route jobs touch only Redis and take milliseconds (a batch well under a second), so their
# timeouts are short: a job abandoned by a killed worker is re-queued once its timeout plus a
# small margin passed (workers/worker.py), so these bound the recovery time. A job that times
# out is retried like any failure.
EMERGENCY_TIMEOUT_S = 5
BATCH_TIMEOUT_S = 20
FAILURE_TTL_S = 7 * 24 * 3600
GUARD_EVERY_S = 1.0  # memory check for producer backpressure


class IngestWorker:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        config: CityConfig,
        catalog: EventCatalog | None = None,
        lanes: Sequence[str] = LANES,
        consumer: str | None = None,
        read_count: int | None = None,
    ):
        self.redis = redis
        self.keys = keys
        self.config = config
        self.routing = config.routing
        self.catalog = catalog or EventCatalog(config)
        # A partitioned city: only the departments at home on this shard (queues/partition.py).
        self.streams = IngestStreams(
            redis, keys, home_departments(config, prefix=keys.prefix), lanes
        )
        self.consumer = consumer or consumer_name()
        self.read_count = read_count or self.routing.batch_max_events
        self.queues: dict[str, Queue] = {
            name: make_queue(redis, keys, name) for name in (EMERGENCY, HIGH, ROUTINE, BULK)
        }
        self.streams.ensure_groups()
        self.guard = MemoryGuard(redis, keys, config.limits)
        self.trace = tracing()  # per-hop timestamps of emergencies (queues/trace.py)
        self.markers = SeenMarkers(redis, self.routing.dedupe_window_s)
        # Bigger jobs while the route workers are behind; never on the emergency lane.
        self.holder: BatchHolder | None = None
        hold_ms = min(self.routing.batch_max_wait_ms, self.routing.claim_idle_ms // 2)
        if "emergency" not in lanes and hold_ms > self.routing.batch_max_ms:
            self.holder = BatchHolder(
                WorkersBehind(redis, self.queues),
                self.routing.batch_max_events,
                self.routing.batch_max_ms,
                hold_ms,
            )

    # -- one step -----------------------------------------------------------------------------
    def step(self, block_ms: int | None = None) -> Counter[str]:
        """Read what is waiting (blocking up to `block_ms`) and hand it on."""
        entries = self.streams.read(self.consumer, self.read_count, block_ms)
        return self.process(entries) if entries else Counter()

    def gather(self, block_ms: int | None = None) -> Counter[str]:
        """Read one micro-batch and hand it on: it closes when `batch_max_events` entries wait
        or `batch_max_ms` after the first one arrived, whichever comes first. An emergency
        closes it at once. Under light load this trades a few milliseconds of routine latency
        for jobs big enough that RQ's per-job bookkeeping stays small against the work; while
        the route workers are behind it keeps gathering (workers/batching.py)."""
        entries = self.streams.read(self.consumer, self.read_count, block_ms)
        if not entries:
            return Counter()
        opened = time.monotonic()
        limit = self.routing.batch_max_events
        deadline = opened + self.routing.batch_max_ms / 1000
        while len(entries) < limit and not _has_emergency(entries):
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            asked = time.monotonic()
            more = self.streams.read(self.consumer, limit - len(entries), left_ms)
            if not more and time.monotonic() - asked < left_ms / 2000:
                time.sleep(min(left_ms, 5) / 1000)  # a server that does not block (stand-ins)
            entries.extend(more)
        if self.holder is None or _has_emergency(entries):
            return self.process(entries)
        decoded = self._decode(entries)
        self.holder.hold(
            lambda count: self.streams.read(self.consumer, count, None),
            self._decode,
            self._queue_of,
            entries,
            decoded,
            opened,
        )
        return self.process(entries, decoded)

    def _queue_of(self, wire: dict[str, Any]) -> str:
        return QUEUE_FOR_PRIORITY[self.catalog.priority_of(wire["type"], wire.get("priority"))]

    def _decode(self, entries: Sequence[Entry]) -> Decoded:
        """Each entry with its validated wire events (a CAP alert: several), or why not."""
        decoded: Decoded = []
        for entry in entries:
            try:
                decoded.append((entry, decode_entry(entry, self.catalog)))
            except InvalidEvent as exc:
                decoded.append((entry, exc))
        return decoded

    def recover(self) -> Counter[str]:
        """Reclaim entries of dead consumers; dead-letter the ones that keep failing."""
        claimed, poison = self.streams.reclaim(
            self.consumer,
            self.routing.claim_idle_ms,
            self.routing.max_deliveries,
            emergency_idle_ms=self.routing.emergency_claim_idle_ms,
        )
        counters = self.process(claimed) if claimed else Counter()
        if poison:
            pipe = self.redis.pipeline(transaction=True)
            for entry, deliveries in poison:
                dead_letter(
                    pipe,
                    self.keys,
                    reason="poison",
                    message=f"delivered {deliveries} times without being acknowledged",
                    stage="ingest",
                    dept=entry.dept,
                    stream=entry.stream,
                    entry_id=entry.id,
                    body=entry.body,
                )
            self.streams.ack(pipe, [entry for entry, _ in poison])
            pipe.execute()
            counters["dead_lettered"] += len(poison)
        counters["reclaimed"] += len(claimed)
        counters["trimmed"] += self.streams.trim_acknowledged()
        return counters

    def process(self, entries: Sequence[Entry], decoded: Decoded | None = None) -> Counter[str]:
        """Validate, dedupe, enqueue and acknowledge `entries` (`decoded`: already validated)."""
        read_ms = now_ms() if self.trace else 0.0
        counters: Counter[str] = Counter()
        pipe = self.redis.pipeline(transaction=True)
        accepted: list[tuple[Entry, dict[str, Any]]] = []
        for entry, wires in self._decode(entries) if decoded is None else decoded:
            if isinstance(wires, InvalidEvent):  # JSON event, or CAP alert -> events
                exc = wires
                body, message = dead_letter_body(entry, str(exc))
                dead_letter(
                    pipe,
                    self.keys,
                    reason=exc.reason,
                    message=message,
                    stage="ingest",
                    dept=entry.dept,
                    stream=entry.stream,
                    entry_id=entry.id,
                    body=body,
                )
                counters["dead_lettered"] += 1
                continue
            accepted.extend((entry, wire) for wire in wires)
        fresh = self._dedupe(accepted)
        counters["duplicates"] += len(accepted) - len(fresh)
        if self.trace:
            stamps = {"read": read_ms, "sent": now_ms()}
            for entry, wire in fresh:
                if wire.get("priority") == "emergency":
                    trace(pipe, self.keys, "enq", entry.id, stamps)
        by_priority: Counter[str] = Counter()
        self._enqueue(pipe, fresh, counters, by_priority)
        self.streams.ack(pipe, entries)
        for name, value in counters.items():
            if name.startswith("in:") or name == "duplicates":
                pipe.hincrby(
                    self.keys.stats, "ingest_duplicates" if name == "duplicates" else name, value
                )
        record_counts(pipe, self.keys, by_priority)
        pipe.execute()
        counters["accepted"] += len(fresh)
        return counters

    def _dedupe(
        self, accepted: list[tuple[Entry, dict[str, Any]]]
    ) -> list[tuple[Entry, dict[str, Any]]]:
        if not accepted:
            return []
        seen = self.keys.seen
        previous = self.markers.claim(
            [seen(entry.dept, wire["id"]) for entry, wire in accepted],
            [entry.id for entry, _ in accepted],
        )
        fresh = []
        for (entry, wire), old in zip(accepted, previous, strict=True):
            if old is None or old.decode() == entry.id:
                fresh.append((entry, wire))
        return fresh

    def _enqueue(
        self,
        pipe: Any,
        fresh: list[tuple[Entry, dict[str, Any]]],
        counters: Counter[str],
        by_priority: Counter[str] | None = None,
    ) -> None:
        by_queue: dict[str, list[tuple[Entry, dict[str, Any]]]] = {}
        for entry, wire in fresh:
            counters[f"in:{entry.dept}"] += 1
            priority = self.catalog.priority_of(wire["type"], wire.get("priority"))
            if by_priority is not None:
                by_priority[in_key(entry.dept, priority.value)] += 1
            queue = QUEUE_FOR_PRIORITY[priority]
            by_queue.setdefault(queue, []).append((entry, wire))
        prefix = self.keys.prefix
        for queue_name, items in by_queue.items():
            rq_queue = self.queues[queue_name]
            if queue_name == EMERGENCY:
                batches = _batches(items, 1)
                timeout, retry = EMERGENCY_TIMEOUT_S, Retry(max=5, interval=[0, 1, 2, 5, 10])
            else:
                batches = _batches(items, self.routing.batch_max_events)
                timeout, retry = BATCH_TIMEOUT_S, Retry(max=3, interval=[1, 5, 30])
            datas = [
                Queue.prepare_data(
                    route_batch,
                    args=[[{"e": wire, "ing": entry.id} for entry, wire in batch]],
                    kwargs={"prefix": prefix},
                    job_id=_job_id(self.keys.name, queue_name, batch),
                    timeout=timeout,
                    result_ttl=0,
                    failure_ttl=FAILURE_TTL_S,
                    retry=retry,
                    description=f"route {len(batch)} {queue_name} event(s)",
                )
                for batch in batches
            ]
            rq_queue.enqueue_many(datas, pipeline=pipe)
            counters[f"jobs:{queue_name}"] += len(datas)

    # -- the loop -----------------------------------------------------------------------------
    def run(
        self, should_stop: Callable[[], bool] | threading.Event, idle_block_ms: int | None = None
    ) -> None:
        """Loop until `should_stop`; survives Redis restarts by reconnecting with backoff."""
        stop = should_stop.is_set if isinstance(should_stop, threading.Event) else should_stop
        block = idle_block_ms or self.routing.batch_max_ms
        shortest = self.routing.claim_idle_ms
        if "emergency" in self.streams.lanes:
            shortest = min(shortest, self.routing.emergency_claim_idle_ms)
        recover_every = max(shortest / 2000, 0.5)
        next_recover = next_guard = 0.0
        backoff = 0.1
        summary = Summary(
            log,
            "ingest summary",
            fields=("batches", "accepted", "dead_lettered", "duplicates"),
            skip=("in",),
        )
        log.info(
            "ingest started",
            extra={"consumer": self.consumer, "streams": len(self.streams.streams)},
        )
        while not stop():
            try:
                if time.monotonic() >= next_guard:
                    self.guard.check()
                    next_guard = time.monotonic() + GUARD_EVERY_S
                if time.monotonic() >= next_recover:
                    summary.add(self.recover(), step="recover")
                    next_recover = time.monotonic() + recover_every
                started = time.monotonic()
                counters = self.gather(block)
                if counters:
                    summary.add({**counters, "batches": 1}, step="batch")
                elif time.monotonic() - started < block / 2000:
                    # The server answered an empty blocking read at once (stand-ins such as
                    # fakeredis do not block): wait out the block time instead of spinning.
                    time.sleep(block / 1000)
                summary.tick(self.lag)
                backoff = 0.1
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                if isinstance(exc, ResponseError) and not refuses_for_now(exc):
                    raise
                log.warning(
                    "redis unavailable; retrying",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": backoff,
                           "consumer": self.consumer},
                )  # fmt: skip
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        summary.flush()

    def lag(self) -> dict[str, int]:
        """Entries waiting in the ingest streams: not yet read (lag) and read but not yet
        acknowledged by any consumer (pending), summed over the streams (one round trip)."""
        return ingest_backlog(self.redis, self.streams.streams, self.streams.group)


def _batches(
    items: list[tuple[Entry, dict[str, Any]]], size: int
) -> list[list[tuple[Entry, dict[str, Any]]]]:
    """Chunks of `size` events, except that the events of one entry (a CAP alert's infos) are
    never split: job ids are made from entry ids, so two jobs starting and ending in the same
    entry would collide and RQ would keep only one of them."""
    batches: list[list[tuple[Entry, dict[str, Any]]]] = []
    for item in items:
        last = batches[-1][-1][0] if batches else None
        same_entry = last is not None and (last.stream, last.id) == (item[0].stream, item[0].id)
        if batches and (len(batches[-1]) < size or same_entry):
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches


# Refusals a healthy Redis gives for a while (out of memory, no replica in sync, a replica
# being promoted): wait and try again instead of ending the process. What ingest had read and
# not handed on stays pending and is reclaimed; nothing is lost.
TRANSIENT_REFUSALS = (OutOfMemoryError, ReadOnlyError, MasterDownError)


def refuses_for_now(error: ResponseError) -> bool:
    # redis-py maps most codes to classes (and drops the code); NOREPLICAS and BUSY it does not.
    text = str(error)
    return isinstance(error, TRANSIENT_REFUSALS) or text.startswith(("NOREPLICAS", "BUSY "))


def _job_id(prefix: str, queue: str, batch: Sequence[tuple[Entry, dict[str, Any]]]) -> str:
    """Idempotent job id from the stream entries it carries. Entry ids are unique per stream
    only, so the lane (e/r) goes in too: a department's two lanes can hold the same id, and an
    emergency-lane entry's non-emergency events (a CAP alert's) share queues with routine ones."""
    first, last = batch[0][0], batch[-1][0]
    return (
        f"{prefix}-{queue}-{first.dept}-{_lane(first)}{first.id}-{len(batch)}-"
        f"{_lane(last)}{last.id}"
    )


def _has_emergency(entries: Sequence[Entry]) -> bool:
    return any(e.stream.endswith(":emergency") for e in entries)


def _lane(entry: Entry) -> str:
    return "e" if entry.stream.endswith(":emergency") else "r"
