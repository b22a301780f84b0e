"""The RQ queues and their order: emergency > high > routine > bulk, plus archive.

Emergency work has its own queue and its own worker processes: strict priority inside one worker
would still make an emergency wait for the routine batch that worker is busy with. Routine
workers listen to high, routine and bulk in that order. Every queue uses RQ's JSON wire format
(jobs carry plain event dicts; never pickle); the queues ingest enqueues on encode it with
orjson (`JSONWire`), which any reader with RQ's `JSONSerializer` decodes alike.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import orjson
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from city.events import Priority
from queues.keys import Keys

EMERGENCY = "emergency"
HIGH = "high"
ROUTINE = "routine"
BULK = "bulk"
ARCHIVE = "archive"
# Escalation checks (jobs/emergency/): their own workers, so a slow fallback channel never
# holds up emergency routing.
ESCALATION = "escalation"

QUEUE_FOR_PRIORITY = {
    Priority.EMERGENCY: EMERGENCY,
    Priority.HIGH: HIGH,
    Priority.ROUTINE: ROUTINE,
    Priority.BULK: BULK,
}
# What each worker role listens to, in the order it drains them.
ROLES: dict[str, tuple[str, ...]] = {
    "emergency": (EMERGENCY,),
    "routine": (HIGH, ROUTINE, BULK),
    "archive": (ARCHIVE,),
    "escalation": (ESCALATION,),
}


def queue_name(keys: Keys, queue: str) -> str:
    """RQ queue name for this city: ``{prefix}.{queue}``, visible as such in `rq info`."""
    return f"{keys.rq_prefix}.{queue}"


class JSONWire:
    """RQ's JSON serializer, encoded by orjson: a route job of 500 events cost ingest about 8 us
    per event in the standard library's encoder. The same JSON (no whitespace), so workers and
    tools reading with `JSONSerializer` are unaffected; what orjson refuses (integers beyond 64
    bits) goes through the standard library as before."""

    @staticmethod
    def dumps(obj: Any, *args: Any, **kwargs: Any) -> bytes:
        try:
            return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            return JSONSerializer.dumps(obj, *args, **kwargs)

    @staticmethod
    def loads(s: bytes | str, *args: Any, **kwargs: Any) -> Any:
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError:  # NaN / Infinity literals, which only json reads
            return json.loads(s)


# zlib level of a job's data. RQ compresses at 6: 6.2 us per event of a 500-event route job,
# a fifth of ingest's CPU; level 1 takes 2.5 us and stores 48 instead of 38 bytes per event
# (uncompressed: 0.3 us but 370 bytes, which a backlog during a worker outage must hold).
JOB_DATA_LEVEL = 1


class WireJob(Job):
    """RQ's job with its data compressed at `JOB_DATA_LEVEL` instead of RQ's 6; RQ reads it
    back with `zlib.decompress` as before, whatever the level."""

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict[str, Any]:
        data = self.data
        self._data = b""  # RQ's own compression of the data, on nothing
        try:
            obj = super().to_dict(include_meta=include_meta, include_result=include_result)
        finally:
            self._data = data
        obj["data"] = zlib.compress(data, JOB_DATA_LEVEL)
        return obj


def make_queue(redis: Redis, keys: Keys, queue: str) -> Queue:
    return Queue(queue_name(keys, queue), connection=redis, serializer=JSONWire, job_class=WireJob)


def register_queues(redis: Redis, queues: list[Queue]) -> None:
    """List the queues in RQ's registry now, not at their first job, so `rq info` shows them
    (and the workers listening to them) from the start."""
    if queues:
        redis.sadd(queues[0].redis_queues_keys, *(q.key for q in queues))


def queues_for_role(redis: Redis, keys: Keys, role: str) -> list[Queue]:
    try:
        names = ROLES[role]
    except KeyError:
        raise ValueError(
            f"unknown worker role {role!r}; choose one of {', '.join(ROLES)}"
        ) from None
    return [make_queue(redis, keys, name) for name in names]
