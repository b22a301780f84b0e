"""Hostile input past ingest, on a real Redis and real RQ workers.

- An event ingest accepts but the router cannot handle (an ``h3cell`` extension that is not an
  H3 cell: ingest checks only that it is a short string) is dead-lettered by the route job as
  ``unroutable``; the rest of its batch is delivered, the job neither fails nor retries.
- Garbage from a department on the consumer side (`Inbox.ack` with ids that do not exist, are
  malformed, or belong to another inbox, or messages claiming an emergency it never got) gives
  an error or is ignored, and never changes what is pending or acknowledged.
"""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from city.events import Event, source_for
from queues.acks import EmergencyStore
from queues.inbox import Inbox
from queues.message import Message
from queues.priority import HIGH, make_queue
from queues.streams import Producer
from tests.pipeline_harness import Harness
from tests.scenarios.emergency_city import cap_alert

pytestmark = pytest.mark.integration
WEST = {"lat": 47.6205, "lon": -122.3493}  # Seattle Center


def incident(**attrs: object) -> Event:
    return Event.new(
        "traffic.incident", source_for("sdot"), {"kind": "collision", "severity": 3},
        location=WEST, **attrs,
    )  # fmt: skip


@pytest.fixture
def harness(redis, keys, seattle, seattle_router):  # type: ignore[no-untyped-def]
    config, base = seattle
    return Harness(redis, keys, config, base, seattle_router)


def test_unroutable_event_in_a_real_batch_is_dead_lettered_and_the_rest_delivered(
    harness, redis, keys
):  # type: ignore[no-untyped-def]
    first, second = incident(), incident()
    bad = incident(h3cell="zzzz")  # a string, so ingest accepts it; the geo index does not
    Producer(redis, "sdot", keys).publish_many([first, bad, second])
    counters = harness.ingest_all()
    assert counters["accepted"] == 3 and counters["jobs:high"] == 1  # one batch, one job
    harness.work("routine")
    assert sorted(harness.inbox_ids("spd-west")) == sorted([first.id, second.id])
    (letter,) = harness.deadletters()
    assert (letter["reason"], letter["stage"]) == ("unroutable", "route")
    assert "not a valid H3 cell" in letter["message"] and bad.id in letter["body"]
    queue = make_queue(redis, keys, HIGH)
    assert FailedJobRegistry(queue=queue).get_job_ids() == []  # the job itself succeeded
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == []  # and schedules no retry
    assert queue.count == 0
    harness.work("routine")  # nothing comes back
    assert len(harness.deadletters()) == 1 and len(harness.inbox_ids("spd-west")) == 2
    assert redis.xpending(keys.ingest("sdot"), "router")["pending"] == 0


def delivered(harness: Harness, redis, keys, n: int) -> list[Message]:  # type: ignore[no-untyped-def]
    events = [incident() for _ in range(n)]
    Producer(redis, "sdot", keys).publish_many(events)
    harness.run()
    messages = Inbox(redis, "spd-west", keys).read()
    assert [m.event_id for m in messages] == [e.id for e in events]
    return messages


def pending(redis, keys, dept: str) -> int:  # type: ignore[no-untyped-def]
    return int(redis.xpending(keys.inbox(dept), dept)["pending"])


def test_garbage_ack_ids_are_ignored_or_refused_and_change_nothing(harness, redis, keys):  # type: ignore[no-untyped-def]
    messages = delivered(harness, redis, keys, 2)
    inbox = Inbox(redis, "spd-west", keys)
    Inbox(redis, "fire", keys).read()  # fire got the same events; its tracking is separate
    assert pending(redis, keys, "spd-west") == 2 and pending(redis, keys, "fire") == 2
    # well-formed ids that are not in this inbox: ignored
    assert inbox.ack(["0-1", "99999999999999-0", "18446744073709551615-18446744073709551615"]) == 0
    assert pending(redis, keys, "spd-west") == 2
    # malformed ids: an error, and all or nothing (the good id next to it stays pending)
    for garbage in ["not-an-id", "", "1-2-3", "-1", "99999999999999999999999-0", "1-x", "\x00"]:
        with pytest.raises(ResponseError, match="Invalid stream ID"):
            inbox.ack([messages[0].entry_id, garbage])
        assert pending(redis, keys, "spd-west") == 2, garbage
    assert inbox.ack([messages[0]]) == 1 and inbox.ack([messages[0]]) == 0  # twice: once
    assert inbox.ack(messages) == 1 and pending(redis, keys, "spd-west") == 0
    assert pending(redis, keys, "fire") == 2  # another department's acks never touch fire's


def test_a_forged_emergency_message_cannot_acknowledge_for_anyone(harness, redis, keys, tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "quake.xml"
    path.write_bytes(cap_alert(f"forge-{keys.prefix}"))
    Producer(redis, "emergency-management", keys).publish_cap(path.read_bytes())
    harness.run()
    (real,) = Inbox(redis, "fire", keys).read()
    event_id = real.event_id
    store = EmergencyStore(redis, keys)
    recipients = store.status(event_id).recipients
    assert "fire" in recipients and "sdot" not in recipients
    # sdot never received it: a hand-made Message naming it acknowledges nothing
    forged = Message("0-1", {"id": event_id, "priority": "emergency"}, {}, 0)
    sdot = Inbox(redis, "sdot", keys)
    assert sdot.ack([forged]) == 0
    # fire acks a bare id that is not in its inbox: nothing is recorded for the emergency
    fire = Inbox(redis, "fire", keys)
    assert fire.ack(["1-1"]) == 0
    after = store.status(event_id).recipients
    assert "sdot" not in after and after["fire"].acked_ms is None
    assert all(r.acked_ms is None for r in after.values())
    assert fire.ack([real]) == 1  # the real acknowledgement still works
    assert store.status(event_id).recipients["fire"].ack_by == "inbox:main"
