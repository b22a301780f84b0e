"""Ingest streams: the producer side (XADD) and the consumer-group side (read, ack, reclaim).

Each department writes to its own streams (so a Redis ACL can confine it): ``ingest:{dept}``
for routine traffic and ``ingest:{dept}:emergency`` for emergencies, which therefore never queue
behind routine backlog. The router reads all of them through one consumer group.

An entry carries one field, ``e``: the event as JSON. Entries are acknowledged only after the
next hop (RQ enqueue or the dead-letter stream) has accepted them, in the same transaction.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ResponseError

from city.events import Event, Priority, new_event_id, source_for
from city.schemas import BUILTIN_TYPES
from queues.keys import ROUTER_GROUP, Keys
from queues.spool import REDIS_DOWN, Spool, SpoolFlusher, xadd_or_spool

EVENT_FIELD = b"e"
LANES = ("emergency", "routine")


class NotReplicatedError(Exception):
    """Redis took the events, but fewer replicas than asked confirmed them within the timeout.

    They are NOT acknowledged: a failover now could lose them. Publish them again (same ids;
    ingest drops the copies that did survive) or let a spool keep them. `event_ids` names them
    (for `publish_raw`, whose bytes are not parsed here, the stream entry id).
    """

    def __init__(self, event_ids: Sequence[str], replicas: int, required: int, timeout_ms: int):
        self.event_ids = list(event_ids)
        self.replicas, self.required, self.timeout_ms = replicas, required, timeout_ms
        super().__init__(
            f"{len(self.event_ids)} event(s) reached {replicas} of the {required} replica(s)"
            f" required within {timeout_ms} ms; not acknowledged"
        )


def _default_priority(event_type: str) -> Priority | None:
    known = BUILTIN_TYPES.get(event_type)
    return known[1] if known else None


class Producer:
    """Publishes a department's events to its ingest streams.

    `publish_many` sends the whole batch in one pipelined round trip. Events may be `Event`
    objects or plain dicts in CloudEvents JSON form; missing `id`, `time`, `source`,
    `specversion` and `department` are filled here.
    """

    def __init__(
        self,
        redis: Redis,
        department: str,
        keys: Keys | None = None,
        priorities: dict[str, Priority] | None = None,
        spool: Spool | None = None,
        flusher: SpoolFlusher | None = None,
        min_replicas: int = 0,
        replica_timeout_ms: int = 1000,
    ):
        self.redis = redis
        self.department = department
        self.keys = keys or Keys.from_env()
        self._priorities = priorities or {}
        self._source = source_for(department)
        # Optional local spool (queues/spool.py): while Redis is unreachable, publish appends
        # to it and returns; `flusher` replays it in order when Redis is back.
        self.spool = spool
        self.flusher = flusher
        # Durable acknowledgement (opt-in): a publish counts only once `min_replicas` replicas
        # hold it (WAIT in the same pipeline), so a failover cannot lose an acknowledged event.
        # Keep `replica_timeout_ms` below the client's socket timeout (5 s by default).
        if min_replicas < 0 or (min_replicas and replica_timeout_ms <= 0):
            raise ValueError("min_replicas must be >= 0 and replica_timeout_ms > 0")
        self.min_replicas = min_replicas
        self.replica_timeout_ms = replica_timeout_ms

    def _lane(self, event_type: str, priority: Any) -> str:
        resolved = priority or self._priorities.get(event_type) or _default_priority(event_type)
        return "emergency" if resolved == Priority.EMERGENCY else "routine"

    def encode(self, event: Event | dict[str, Any]) -> tuple[str, str, bytes]:
        """(stream key, event id, payload) for one event."""
        if isinstance(event, Event):
            if event.department is None:
                event.department = self.department
            body = event.model_dump_json(exclude_none=True).encode()
            return (
                self.keys.ingest(self.department, self._lane(event.type, event.priority)),
                event.id,
                body,
            )
        wire = dict(event)
        wire.setdefault("id", new_event_id())
        wire.setdefault("specversion", "1.0")
        wire.setdefault("source", self._source)
        wire.setdefault("department", self.department)
        if "time" not in wire:
            from datetime import UTC, datetime

            wire["time"] = datetime.now(UTC).isoformat()
        lane = self._lane(str(wire.get("type", "")), wire.get("priority"))
        return self.keys.ingest(self.department, lane), str(wire["id"]), json.dumps(wire).encode()

    def publish(self, event: Event | dict[str, Any]) -> str:
        """Publish one event; returns its id."""
        if self.min_replicas:
            return self.publish_many([event])[0]
        stream, event_id, body = self.encode(event)
        if self.spool is not None:
            xadd_or_spool(self.redis, self.spool, stream, {"e": body}, event_id=event_id,
                          flusher=self.flusher)  # fmt: skip
            return event_id
        self.redis.xadd(stream, {EVENT_FIELD: body})
        return event_id

    def publish_many(self, events: Iterable[Event | dict[str, Any]]) -> list[str]:
        """Publish a batch in one round trip; returns the ids in order."""
        if self.spool is not None:
            return self._publish_many_or_spool(events)
        if self.min_replicas:
            return self._publish_replicated([self.encode(event) for event in events])
        pipe = self.redis.pipeline(transaction=False)
        ids: list[str] = []
        for event in events:
            stream, event_id, body = self.encode(event)
            pipe.xadd(stream, {EVENT_FIELD: body})
            ids.append(event_id)
        pipe.execute()
        return ids

    def _publish_many_or_spool(self, events: Iterable[Event | dict[str, Any]]) -> list[str]:
        """One pipeline while Redis answers and nothing waits in the spool; else spool them all
        (a batch cut off mid-way may arrive twice: ingest dedupes by event id)."""
        assert self.spool is not None
        encoded = [self.encode(event) for event in events]
        if not self.spool.has_pending():
            try:
                if self.min_replicas:
                    return self._publish_replicated(encoded)
                pipe = self.redis.pipeline(transaction=False)
                for stream, _, body in encoded:
                    pipe.xadd(stream, {EVENT_FIELD: body})
                pipe.execute()
                return [event_id for _, event_id, _ in encoded]
            except (*REDIS_DOWN, NotReplicatedError):
                pass  # spooled below; copies that did reach Redis are dropped by ingest's dedupe
        self.spool.append_many([(stream, {"e": body}, eid) for stream, eid, body in encoded])
        if self.flusher is not None:
            self.flusher.wake()
        return [event_id for _, event_id, _ in encoded]

    def _publish_replicated(self, encoded: Sequence[tuple[str, str, bytes]]) -> list[str]:
        """XADD the batch and ``WAIT min_replicas timeout`` in one pipelined round trip.

        WAIT blocks until that many replicas confirmed every write this connection made, so
        the reply covers the whole batch. Fewer -> `NotReplicatedError` (nothing acknowledged).
        """
        pipe = self.redis.pipeline(transaction=False)
        for stream, _, body in encoded:
            pipe.xadd(stream, {EVENT_FIELD: body})
        pipe.wait(self.min_replicas, self.replica_timeout_ms)
        replicas = int(pipe.execute()[-1])
        ids = [event_id for _, event_id, _ in encoded]
        if replicas < self.min_replicas:
            raise NotReplicatedError(ids, replicas, self.min_replicas, self.replica_timeout_ms)
        return ids

    def publish_raw(self, body: bytes, lane: str = "routine") -> str:
        """Publish bytes as they are (for bridges that relay already-encoded events)."""
        stream = self.keys.ingest(self.department, lane)
        if self.min_replicas:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xadd(stream, {EVENT_FIELD: body})
            pipe.wait(self.min_replicas, self.replica_timeout_ms)
            entry_id, replicas = pipe.execute()
            if int(replicas) < self.min_replicas:
                raise NotReplicatedError(
                    [entry_id.decode()], int(replicas), self.min_replicas, self.replica_timeout_ms
                )
            return str(entry_id.decode())
        return self.redis.xadd(stream, {EVENT_FIELD: body}).decode()


@dataclass(frozen=True)
class Entry:
    """One ingest stream entry as read by the router."""

    stream: str
    dept: str
    id: str
    fields: dict[bytes, bytes]

    @property
    def body(self) -> bytes | None:
        return self.fields.get(EVENT_FIELD)

    @property
    def millis(self) -> int:
        """Redis time (ms) when the entry was accepted."""
        return int(self.id.split("-", 1)[0])


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class IngestStreams:
    """The router's view of every department's ingest streams (one consumer group)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        departments: Sequence[str],
        lanes: Sequence[str] = LANES,
        group: str = ROUTER_GROUP,
    ):
        self.redis = redis
        self.keys = keys
        self.group = group
        self.lanes = tuple(lane for lane in LANES if lane in lanes)
        if not self.lanes:
            raise ValueError(f"no known lane in {lanes!r}; lanes are {', '.join(LANES)}")
        self._dept_of: dict[str, str] = {}
        for lane in self.lanes:  # emergency streams first: read and handled first
            for dept in departments:
                self._dept_of[keys.ingest(dept, lane)] = dept
        self.streams = list(self._dept_of)

    def ensure_groups(self) -> None:
        """Create the consumer group on every stream (from the start, so nothing is missed)."""
        pipe = self.redis.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xgroup_create(stream, self.group, id="0", mkstream=True)
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, ResponseError) and "BUSYGROUP" not in str(result):
                raise result

    def read(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        """New entries for this consumer, emergency streams first."""
        reply = self.redis.xreadgroup(
            self.group, consumer, dict.fromkeys(self.streams, ">"), count=count, block=block_ms
        )
        return self._entries(reply)

    def _entries(self, reply: Any) -> list[Entry]:
        entries: list[Entry] = []
        for stream, items in reply or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            dept = self._dept_of[name]
            for entry_id, fields in items:
                eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                entries.append(Entry(name, dept, eid, fields or {}))
        entries.sort(key=lambda e: 0 if e.stream.endswith(":emergency") else 1)
        return entries

    def reclaim(
        self, consumer: str, min_idle_ms: int, max_deliveries: int, count: int = 500
    ) -> tuple[list[Entry], list[tuple[Entry, int]]]:
        """Take over entries another consumer read but never acknowledged (it died).

        Returns (entries to process again, entries delivered too often with their delivery
        count). The second kind must be dead-lettered: an entry that crashes every consumer
        must not circulate forever.
        """
        claimed: list[Entry] = []
        poison: list[tuple[Entry, int]] = []
        for stream in self.streams:
            pending = self.redis.xpending_range(
                stream, self.group, min="-", max="+", count=count, idle=min_idle_ms
            )
            if not pending:
                continue
            retry_ids = [p["message_id"] for p in pending if p["times_delivered"] < max_deliveries]
            poison_counts = {
                _text(p["message_id"]): p["times_delivered"]
                for p in pending
                if p["times_delivered"] >= max_deliveries
            }
            ids = retry_ids + list(poison_counts)
            reply = self.redis.xclaim(stream, self.group, consumer, min_idle_ms, ids)
            for entry in self._entries([(stream, [item for item in reply if item and item[0]])]):
                if entry.id in poison_counts:
                    poison.append((entry, poison_counts[entry.id]))
                else:
                    claimed.append(entry)
        return claimed, poison

    def ack(self, pipe: Pipeline, entries: Iterable[Entry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.id)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)


def dead_letter(
    pipe: Pipeline | Redis,
    keys: Keys,
    *,
    reason: str,
    message: str,
    stage: str,
    dept: str,
    stream: str = "",
    entry_id: str = "",
    body: bytes | str | None = None,
) -> None:
    """Record a refused input with its reason and the original payload. Never trimmed."""
    fields: dict[str, Any] = {
        "reason": reason,
        "message": message[:2000],
        "stage": stage,
        "dept": dept,
        "stream": stream,
        "entry": entry_id,
    }
    if body is not None:
        fields["body"] = body
    pipe.xadd(keys.deadletter, fields)
    pipe.hincrby(keys.stats, f"deadletter:{reason}", 1)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
