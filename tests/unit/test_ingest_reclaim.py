"""Entries of an ingest consumer that died are reclaimed; emergencies much sooner."""

from __future__ import annotations

import time

from city.events import Event, source_for
from queues.streams import Producer
from tests.pipeline_harness import Harness

WEST = {"lat": 47.6205, "lon": -122.3493}


def test_a_dead_consumers_emergencies_are_reclaimed_before_its_routine_entries(
    redis, keys, seattle, seattle_router
):
    config, base = seattle
    routing = config.routing.model_copy(
        update={"claim_idle_ms": 60_000, "emergency_claim_idle_ms": 100}
    )
    h = Harness(redis, keys, config.model_copy(update={"routing": routing}), base, seattle_router)
    data = {"kind": "collision", "severity": 2}
    routine = Event.new("traffic.incident", source_for("sdot"), data, location=WEST)
    urgent = Event.new("traffic.incident", source_for("sdot"), {**data, "severity": 5},
                       location=WEST, priority="emergency")  # fmt: skip
    Producer(redis, "sdot", keys).publish_many([routine, urgent])
    read = h.ingest.streams.read("crashed", 10, None)  # read, then the consumer dies
    assert {e.stream for e in read} == {keys.ingest("sdot"), keys.ingest("sdot", "emergency")}
    time.sleep(0.2)
    counters = h.ingest.recover()
    assert counters["reclaimed"] == 1 and counters["accepted"] == 1
    h.work("emergency")
    assert h.inbox_ids("spd-west") == [urgent.id]
    pending = redis.xpending(keys.ingest("sdot"), "router")["pending"]
    assert pending == 1  # the routine entry waits for claim_idle_ms


def test_looking_for_dead_consumers_entries_is_one_round_trip(redis, keys, seattle, seattle_router):
    """The emergency ingest looks every second or two: a round trip per stream (27 in the demo
    city) held its next read - an emergency's - for tens of milliseconds on a busy host."""
    config, base = seattle
    h = Harness(redis, keys, config, base, seattle_router)
    direct: list[bytes] = []
    send = redis.execute_command

    def counting(*args, **kwargs):
        direct.append(args[0])
        return send(*args, **kwargs)

    redis.execute_command = counting
    claimed, poison = h.ingest.streams.reclaim("me", 0, 5)
    assert (claimed, poison) == ([], [])
    assert not [c for c in direct if str(c).upper().startswith("XPENDING")]
    assert len(h.ingest.streams.streams) > 20
