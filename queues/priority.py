"""The RQ queues and their order: emergency > high > routine > bulk, plus archive.

Emergency work has its own queue and its own worker processes: strict priority inside one worker
would still make an emergency wait for the routine batch that worker is busy with. Routine
workers listen to high, routine and bulk in that order. Every queue uses RQ's JSON serializer
(jobs carry plain event dicts; never pickle).
"""

from __future__ import annotations

from redis import Redis
from rq import Queue
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


def make_queue(redis: Redis, keys: Keys, queue: str) -> Queue:
    return Queue(queue_name(keys, queue), connection=redis, serializer=JSONSerializer)


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
