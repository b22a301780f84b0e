"""The producer side of the ingest streams: `Producer` XADDs each event to its department's
stream for its lane (so a Redis ACL can confine the department), pipelined in chunks, honouring
backpressure, spooling locally while Redis is unreachable and, when asked, WAITing for replicas.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from redis import Redis
from redis.exceptions import ClusterError, ResponseError

from city.cap import alert_priority
from city.events import Event, Priority, new_event_id, source_for
from city.schemas import BUILTIN_TYPES
from queues.cluster_migration import refused_during_migration
from queues.keys import Keys
from queues.limits import Backpressure, PressureGauge, is_oom
from queues.replicas import write_then_wait
from queues.spool import REDIS_DOWN, Spool, SpoolFlusher, xadd_or_spool
from queues.streams.entries import CAP_FIELD, EVENT_FIELD, LANES, _is_emergency

PUBLISH_CHUNK = 1000  # events per pipeline round trip (bounds client and server buffers)


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

    `publish_many` sends the batch pipelined, `PUBLISH_CHUNK` events per round trip. Events may
    be `Event` objects or plain dicts in CloudEvents JSON form; missing `id`, `time`, `source`,
    `specversion` and `department` are filled here.

    While Redis memory is high (queues/limits.py) routine events are refused with
    `Backpressure`; emergencies always go through. `backpressure=False` turns the check off
    (for tools that must write whatever happens, such as replays run by operators).
    """

    def __init__(
        self,
        redis: Redis,
        department: str,
        keys: Keys | None = None,
        priorities: dict[str, Priority] | None = None,
        spool: Spool | None = None,
        flusher: SpoolFlusher | None = None,
        backpressure: bool = True,
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
        self.gauge = PressureGauge(redis, self.keys) if backpressure else None
        # Durable acknowledgement (opt-in): a publish counts only once `min_replicas` replicas
        # hold it (WAIT in the same pipeline), so a failover cannot lose an acknowledged event.
        # Keep `replica_timeout_ms` below the client's socket timeout (5 s by default).
        if min_replicas < 0 or (min_replicas and replica_timeout_ms <= 0):
            raise ValueError("min_replicas must be >= 0 and replica_timeout_ms > 0")
        self.min_replicas = min_replicas
        self.replica_timeout_ms = replica_timeout_ms

    def _replicated(self, stream: str, writes: Callable[[Any], object]) -> list[Any]:
        """`writes` then WAIT on one connection to the primary of `stream`'s slot (on a
        cluster too: queues/replicas.py); WAIT's reply last."""
        return write_then_wait(
            self.redis, stream, writes, self.min_replicas, self.replica_timeout_ms
        )

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
        stream, event_id, body = self.encode(event)
        if self.gauge is not None and not _is_emergency(stream):
            try:
                self.gauge.check()
            except Backpressure as exc:
                raise Backpressure(exc.detail, refused=[event_id]) from None
        if self.spool is not None:
            if self.min_replicas:
                return self._publish_many_or_spool([(stream, event_id, body)])[0]
            xadd_or_spool(self.redis, self.spool, stream, {"e": body}, event_id=event_id,
                          flusher=self.flusher)  # fmt: skip
            return event_id
        return self._send([(stream, event_id, body)])[0]

    def encode_wire(self, wire: dict[str, Any]) -> tuple[str, str, bytes]:
        """(stream key, event id, payload) for an event already validated into its wire form
        (`EventCatalog.accept`: id, department and priority set), encoded with orjson."""
        lane = self._lane(str(wire.get("type", "")), wire.get("priority"))
        return self.keys.ingest(self.department, lane), str(wire["id"]), orjson.dumps(wire)

    def publish_many(self, events: Iterable[Event | dict[str, Any]]) -> list[str]:
        """Publish a batch pipelined; returns the ids in order.

        Under backpressure the batch's emergencies are published and `Backpressure` names the
        routine events refused (`refused`) and those sent (`accepted`)."""
        return self.publish_encoded([self.encode(event) for event in events])

    def publish_encoded(self, encoded: Sequence[tuple[str, str, bytes]]) -> list[str]:
        """`publish_many` for events already encoded (`encode`, `encode_wire`)."""
        encoded = list(encoded)
        refused: list[str] = []
        pressure: Backpressure | None = None
        if self.gauge is not None and any(not _is_emergency(s) for s, _, _ in encoded):
            try:
                self.gauge.check()
            except Backpressure as exc:
                refused = [eid for s, eid, _ in encoded if not _is_emergency(s)]
                encoded = [item for item in encoded if _is_emergency(item[0])]
                if not encoded:
                    raise Backpressure(exc.detail, refused=refused) from None
                pressure = exc
        if self.spool is not None:
            ids = self._publish_many_or_spool(encoded)
        else:
            ids = self._send(encoded)
        if pressure is not None:
            raise Backpressure(pressure.detail, accepted=ids, refused=refused)
        return ids

    def _send(self, encoded: Sequence[tuple[str, str, bytes]]) -> list[str]:
        """XADD the batch pipelined, `PUBLISH_CHUNK` entries per round trip; with
        `min_replicas`, each round trip ends with ``WAIT min_replicas timeout``.

        WAIT blocks until that many replicas confirmed every write this connection made, so
        its reply covers the whole chunk; fewer -> `NotReplicatedError` (the chunks before it
        are replicated; sending the batch again is safe, ingest drops duplicates). Redis's
        own memory limit (OOM) -> `Backpressure`."""
        ids = [event_id for _, event_id, _ in encoded]
        try:
            for start in range(0, len(encoded), PUBLISH_CHUNK):
                chunk = encoded[start : start + PUBLISH_CHUNK]

                def xadds(pipe: Any, chunk: Sequence[tuple[str, str, bytes]] = chunk) -> None:
                    for stream, _, body in chunk:
                        pipe.xadd(stream, {EVENT_FIELD: body})

                if self.min_replicas:
                    replies = self._replicated(chunk[0][0], xadds)
                    if int(replies[-1]) < self.min_replicas:
                        raise NotReplicatedError(
                            ids, int(replies[-1]), self.min_replicas, self.replica_timeout_ms
                        )
                else:
                    pipe = self.redis.pipeline(transaction=False)
                    xadds(pipe)
                    pipe.execute()
        except ResponseError as exc:
            if is_oom(exc):
                raise Backpressure(str(exc), refused=ids) from exc
            raise
        return ids

    def _publish_many_or_spool(self, encoded: list[tuple[str, str, bytes]]) -> list[str]:
        """One pipeline while Redis answers and nothing waits in the spool; else spool them all
        (a batch cut off mid-way may arrive twice: ingest dedupes by event id)."""
        assert self.spool is not None
        if not self.spool.has_pending():
            try:
                return self._send(encoded)
            except (*REDIS_DOWN, NotReplicatedError):
                pass  # spooled below; copies that did reach Redis are dropped by ingest's dedupe
            except (ClusterError, ResponseError) as exc:
                if not refused_during_migration(exc):
                    raise
                # a slot migration that outlasted MIGRATION_WAIT_S: the flusher replays them
        self.spool.append_many([(stream, {"e": body}, eid) for stream, eid, body in encoded])
        if self.flusher is not None:
            self.flusher.wake()
        return [event_id for _, event_id, _ in encoded]

    def publish_raw(self, body: bytes, lane: str = "routine") -> str:
        """Publish bytes as they are (for bridges that relay already-encoded events)."""
        stream = self.keys.ingest(self.department, lane)
        if self.min_replicas:
            entry_id, replicas = self._replicated(
                stream, lambda pipe: pipe.xadd(stream, {EVENT_FIELD: body})
            )
            if int(replicas) < self.min_replicas:
                raise NotReplicatedError(
                    [entry_id.decode()], int(replicas), self.min_replicas, self.replica_timeout_ms
                )
            return str(entry_id.decode())
        return self.redis.xadd(stream, {EVENT_FIELD: body}).decode()

    def publish_cap(self, xml: bytes, lane: str | None = None) -> str:
        """Publish a raw CAP 1.2 alert (for bridges relaying NWS/IPAWS feeds); returns the
        stream entry id (the spool sequence number, prefixed ``spool:``, while Redis is down).

        Ingest parses and validates it, turns each ``<info>`` into an event (deterministic ids:
        a re-sent alert dedupes) or dead-letters it with a reason; nothing is checked here.
        The lane: given, or the emergency lane when a quick parse without schema validation
        (`city.cap.alert_priority`) finds an info block of priority emergency, so an imminent
        threat never queues behind routine backlog while Test, Minor or unreadable alerts do
        not crowd the emergency lane.
        """
        if lane is None:
            lane = "emergency" if alert_priority(xml) == Priority.EMERGENCY else "routine"
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}; lanes are {', '.join(LANES)}")
        stream = self.keys.ingest(self.department, lane)
        if self.gauge is not None and lane != "emergency":
            self.gauge.check()  # Backpressure: a routine alert waits like any routine event
        if self.spool is not None:
            where = xadd_or_spool(
                self.redis, self.spool, stream, {"cap": xml}, flusher=self.flusher
            )
            return where.ref if where.where == "redis" else f"spool:{where.ref}"
        try:
            if self.min_replicas:
                replies = self._replicated(stream, lambda pipe: pipe.xadd(stream, {CAP_FIELD: xml}))
            else:
                replies = [self.redis.xadd(stream, {CAP_FIELD: xml})]
        except ResponseError as exc:
            if is_oom(exc):
                raise Backpressure(str(exc)) from exc
            raise
        entry_id = replies[0].decode() if isinstance(replies[0], bytes) else str(replies[0])
        if self.min_replicas and int(replies[-1]) < self.min_replicas:
            raise NotReplicatedError(
                [entry_id], int(replies[-1]), self.min_replicas, self.replica_timeout_ms
            )
        return entry_id
