"""Key names: unchanged for a single Redis; one cluster slot for a hash-tagged prefix."""

from __future__ import annotations

import pytest
from redis.crc import key_slot
from rq.job import JOB_ID_PATTERN

from jobs.emergency.levels import job_id
from queues.keys import Keys
from queues.priority import ROUTINE, queue_name


def _every_key(keys: Keys) -> list[str]:
    return [
        keys.ingest("police"),
        keys.ingest("police", "emergency"),
        keys.deadletter,
        keys.seen("police", "e1"),
        keys.inbox("fire"),
        keys.hot("traffic.incident"),
        keys.hot_types,
        keys.stats,
        keys.latency("emergency"),
        keys.replay_marker(keys.ingest("police"), "e1"),
        keys.grants,
        keys.audit,
        keys.audit_inbox,
        keys.audit_head,
        keys.juris_data("police-precincts", 3),
        keys.consent_index,
        keys.pia,
        keys.backpressure,
        keys.alarm("inbox:fire"),
        keys.archive_done("traffic.incident", 0),
        keys.scheduler_lease,
        keys.emergency("e1"),
        keys.emergencies,
        keys.ack("fire", "e1"),
        keys.outbox("b", "emergency"),
        keys.relayed("a", "1-0"),
        keys.tokens,
        keys.idempotency("police", "ab"),
    ]


def test_single_redis_names_are_unchanged() -> None:
    keys = Keys("city")
    assert (keys.inbox("fire"), keys.seen("police", "e1")) == (
        "city:inbox:fire",
        "city:seen:police:e1",
    )
    assert (keys.name, keys.slot_group, queue_name(keys, ROUTINE)) == (
        "city",
        False,
        "city.routine",
    )


def test_every_key_of_a_slot_group_is_in_one_slot() -> None:
    keys = Keys("{city-north}")
    assert keys.slot_group
    assert keys.inbox("fire") == "{city-north}:inbox:fire"
    assert {key_slot(key.encode()) for key in _every_key(keys)} == {key_slot(b"city-north")}
    # RQ's keys join them when the group's processes set RQ_KEY_PREFIX={city-north}:rq.
    assert key_slot(b"{city-north}:rq:queue:city-north.routine") == key_slot(b"city-north")


def test_rq_names_of_a_slot_group_carry_no_braces() -> None:
    keys = Keys("{city-north}")
    assert queue_name(keys, ROUTINE) == "city-north.routine"
    assert JOB_ID_PATTERN.fullmatch(job_id(keys, "e1", ["fire"], 1))


@pytest.mark.parametrize("prefix", ["{city", "city}", "{}", "{a.b}", "{a}{b}", "a:b"])
def test_malformed_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="key prefix"):
        Keys(prefix)
