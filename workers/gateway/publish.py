"""``POST /v1/events`` and ``POST /v1/cap``: the Redis path's rules, over HTTP.

Each event of a request passes the same `EventCatalog.accept` as at ingest (so the reasons
are the dead-letter stream's: ``invalid_envelope``, ``unknown_type``, ``invalid_payload``,
``forged_source``, ``too_large``...). Refused events are dead-lettered (stage ``gateway``,
with the bytes received) and listed in the answer; accepted ones are XADDed by the
department's `Producer` (backpressure, replica acknowledgement and OOM handling as on the
Redis path), and the answer (202, the accepted ids) is sent only once Redis holds them (and,
with ``?min_replicas=N``, N replicas). Ingest validates them again, drops duplicates by event id
and routes them like any other event.

An event whose ``department`` attribute names another department than the token's -> 403 for
the whole request (nothing published). Backpressure -> 429 with ``Retry-After`` (the
emergencies of the request are published all the same, and named); too few replicas -> 503.

A request of a few events that carries an emergency (`endpoints.INLINE_MAX_EVENTS`), without
``min_replicas``, is handled on the event loop (`Publisher.events_async`: validation takes
~30 us an event, the XADDs and dead letters go in one redis.asyncio pipeline), so it never
waits for a thread or for the GIL behind routine batches. Everything else runs in a worker
thread (`Publisher.events`): validating a 1,000-event batch takes tens of milliseconds, which
must not stall the loop's other requests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis import Redis
from redis.exceptions import ResponseError

from city.catalog import EventCatalog, InvalidEvent
from city.events import Priority
from queues.ingest_decode import MAX_DEAD_LETTER_BODY, cap_wires
from queues.keys import Keys
from queues.limits import Backpressure, is_oom
from queues.streams import EVENT_FIELD, Producer, dead_letter
from workers.gateway.cloudevents import Candidate
from workers.gateway.homes import Homes
from workers.gateway.problem import Problem

STAGE = "gateway"
PRESSURE_INTERVAL_S = 0.5  # as the producers' PressureGauge


@dataclass
class Refusal:
    index: int
    id: str | None
    reason: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "reason": self.reason, "detail": self.detail}


@dataclass
class Outcome:
    accepted: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    emergencies: int = 0
    pressure: Backpressure | None = None  # routine events refused for now (429)


def claimed_departments(candidates: Sequence[Candidate], dept: str) -> None:
    """403 if any event says it comes from another department (before anything is written)."""
    for c in candidates:
        claimed = c.doc.get("department") if c.doc else None
        if claimed is not None and claimed != dept:
            raise Problem(
                403,
                "forbidden",
                f"event {c.index} ({c.id}) claims department {claimed!r}; "
                f"this token publishes for {dept!r}",
                index=c.index,
            )


class Publisher:
    """Validation, dead letters and publishing for one gateway process (thread-safe)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        catalog: EventCatalog,
        replica_timeout_ms: int,
        homes: Homes | None = None,
    ):
        self.redis = redis
        self.keys = keys
        self.catalog = catalog
        self.replica_timeout_ms = replica_timeout_ms
        self.homes = homes or Homes(keys)
        self._producers: dict[tuple[str, int], Producer] = {}
        # The backpressure flag of each home (slot group) written to: (read at, state).
        self._pressure_seen: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def producer(self, dept: str, min_replicas: int = 0) -> Producer:
        """The department's producer, under its home's keys (421 when out of reach)."""
        found = self._producers.get((dept, min_replicas))
        if found is None:
            found = self._producers[(dept, min_replicas)] = Producer(
                self.redis,
                dept,
                self.homes.keys_for(dept),
                min_replicas=min_replicas,
                replica_timeout_ms=self.replica_timeout_ms,
            )
        return found

    def carries_emergency(self, candidates: Sequence[Candidate]) -> bool:
        """Whether a request holds an emergency (by its stated priority or its type's)."""
        for c in candidates:
            if c.doc is None:
                continue
            explicit, kind = c.doc.get("priority"), c.doc.get("type")
            if explicit == Priority.EMERGENCY:
                return True
            if (
                explicit is None
                and isinstance(kind, str)
                and self.catalog.priority_of(kind) == Priority.EMERGENCY
            ):
                return True
        return False

    def validate(
        self, dept: str, candidates: Sequence[Candidate]
    ) -> tuple[Outcome, list[dict[str, Any]]]:
        """`EventCatalog.accept` on every candidate: (the outcome with the refusals, the wire
        forms of the accepted events)."""
        outcome = Outcome()
        wires: list[dict[str, Any]] = []
        for c in candidates:
            if c.error is None:
                assert c.doc is not None
                try:
                    raw = c.json if c.json is not None else orjson.dumps(c.doc)
                    wires.append(self.catalog.accept(raw, dept))
                    continue
                except InvalidEvent as exc:
                    c.error = exc
                except Exception as exc:  # noqa: BLE001 - refused with its reason, like ingest
                    c.error = InvalidEvent(
                        "decode_failed", f"validation failed: {type(exc).__name__}: {exc}"
                    )
            assert c.error is not None
            outcome.refused.append(Refusal(c.index, c.id, c.error.reason, str(c.error)))
        return outcome, wires

    def events(self, dept: str, candidates: Sequence[Candidate], min_replicas: int) -> Outcome:
        """Validate, dead-letter the refused, publish the rest with the department's
        `Producer` (in a worker thread: any size, ``min_replicas``)."""
        outcome, wires = self.validate(dept, candidates)
        try:
            if wires:
                producer = self.producer(dept, min_replicas)
                encoded = [producer.encode_wire(w) for w in wires]
                outcome.emergencies = sum(1 for s, _, _ in encoded if _is_emergency(s))
                try:
                    outcome.accepted = producer.publish_encoded(encoded)
                except Backpressure as exc:
                    outcome.accepted, outcome.pressure = exc.accepted, exc
        finally:
            if outcome.refused:
                self.dead_letter(dept, candidates, outcome.refused)
        return outcome

    async def events_async(
        self, aredis: Any, dept: str, candidates: Sequence[Candidate]
    ) -> Outcome:
        """`events` for a small request without ``min_replicas``, on the event loop: the XADDs
        and dead letters in ONE redis.asyncio pipeline, no thread. Backpressure exactly as
        `Producer.publish_encoded` does it (the flag read at most every 0.5 s, like its
        `PressureGauge`; routine events refused, emergencies sent; Redis's OOM refusal ->
        `Backpressure`)."""
        outcome, wires = self.validate(dept, candidates)
        producer = self.producer(dept)
        encoded = [producer.encode_wire(w) for w in wires]
        outcome.emergencies = sum(1 for s, _, _ in encoded if _is_emergency(s))
        routine = [eid for s, eid, _ in encoded if not _is_emergency(s)]
        if routine:
            state = await self._pressure(aredis, producer.keys)
            if state is not None:
                detail = f"{state.get('used_mb')} MB used, high watermark {state.get('high_mb')} MB"
                encoded = [item for item in encoded if _is_emergency(item[0])]
                outcome.pressure = Backpressure(detail, refused=routine)
        pipe = aredis.pipeline(transaction=False)
        for stream, _, body in encoded:
            pipe.xadd(stream, {EVENT_FIELD: body})
        for r in outcome.refused:
            self._dead_letter(pipe, dept, r.reason, r.detail, candidates[r.index].raw)
        if encoded or outcome.refused:
            try:
                await pipe.execute()
            except ResponseError as exc:
                if not is_oom(exc):
                    raise
                outcome.pressure = Backpressure(str(exc), refused=[e for _, e, _ in encoded])
                encoded = []
        outcome.accepted = [eid for _, eid, _ in encoded]
        if outcome.pressure is not None:
            outcome.pressure.accepted = list(outcome.accepted)
        return outcome

    def dead_letter(
        self, dept: str, candidates: Sequence[Candidate], refused: Sequence[Refusal]
    ) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for r in refused:
            self._dead_letter(pipe, dept, r.reason, r.detail, candidates[r.index].raw)
        pipe.execute()

    def _dead_letter(self, pipe: Any, dept: str, reason: str, detail: str, raw: bytes) -> None:
        if len(raw) > MAX_DEAD_LETTER_BODY:
            note = f"[body truncated to the first {MAX_DEAD_LETTER_BODY} of {len(raw)} bytes] "
            raw, detail = raw[:MAX_DEAD_LETTER_BODY], note + detail
        dead_letter(pipe, self.keys, reason=reason, message=detail, stage=STAGE, dept=dept,
                    stream="http", body=raw)  # fmt: skip

    async def _pressure(self, aredis: Any, keys: Keys) -> dict[str, Any] | None:
        """The backpressure flag (queues/limits.py) of the home written to (`keys`), read at
        most every `PRESSURE_INTERVAL_S`."""
        now = time.monotonic()
        read_at, state = self._pressure_seen.get(keys.prefix, (float("-inf"), None))
        if now - read_at >= PRESSURE_INTERVAL_S:
            raw = await aredis.get(keys.backpressure)
            state = orjson.loads(raw) if raw else None
            self._pressure_seen[keys.prefix] = (now, state)
        return state

    def cap(self, dept: str, xml: bytes, min_replicas: int) -> tuple[list[str], str, int]:
        """Publish a CAP alert on the raw path; returns (event ids, stream entry id, how many
        are emergencies). It is parsed here too, only to name its event ids (deterministic:
        ingest derives the same) and to refuse a bad document at once (422, dead-lettered
        with the reason ingest would give)."""
        try:
            wires = cap_wires(xml, dept, self.catalog)
        except InvalidEvent as exc:
            pipe = self.redis.pipeline(transaction=False)
            self._dead_letter(pipe, dept, exc.reason, str(exc), xml)
            pipe.execute()
            raise Problem(422, exc.reason, str(exc)) from None
        entry = self.producer(dept, min_replicas).publish_cap(xml)
        emergencies = sum(1 for w in wires if w.get("priority") == Priority.EMERGENCY)
        return [str(w["id"]) for w in wires], entry, emergencies


def _is_emergency(stream: str) -> bool:
    return stream.endswith(":emergency")
