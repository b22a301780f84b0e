"""Per-hop timestamps of emergencies (queues/trace.py): off by default, and when on, every hop
of an emergency through ingest, RQ and delivery is stamped in order, in round trips the path
makes anyway."""

import pytest

from city.events import Event, source_for
from queues.streams import Producer
from queues.trace import ENV, HOPS, hops, joined, trace_key
from tests.pipeline_harness import Harness

WEST = {"lat": 47.6205, "lon": -122.3493}


def emergency() -> Event:
    return Event.new(
        "health.emergency",
        source_for("ems"),
        {"incident_number": "E-1", "kind": "cardiac"},
        location=WEST,
        department="ems",
    )


@pytest.fixture
def harness(redis, keys, seattle, seattle_router):
    config, base = seattle
    return Harness(redis, keys, config, base, seattle_router)


def test_tracing_is_off_by_default(harness, redis, keys, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    Producer(redis, "ems", keys).publish(emergency())
    harness.run()
    assert redis.xlen(trace_key(keys)) == 0


def test_every_hop_of_an_emergency_is_stamped_in_order(redis, keys, seattle, seattle_router,
                                                       monkeypatch):  # fmt: skip
    monkeypatch.setenv(ENV, "1")
    config, base = seattle
    harness = Harness(redis, keys, config, base, seattle_router)  # reads the setting at start
    event = emergency()
    Producer(redis, "ems", keys).publish(event)
    harness.run()
    traced = joined(redis.xrange(trace_key(keys)))
    ((ing, stamps),) = traced.items()
    assert ing == redis.xrange(keys.ingest("ems", "emergency"))[0][0].decode()
    durations = hops(stamps)
    assert set(durations) == {name for name, _, _ in HOPS}
    # ms-resolution Redis stamps (the ingest entry id, the enqueue entry id) allow 1 ms slack
    assert all(value >= -1 for value in durations.values())
    assert durations["total"] == pytest.approx(
        sum(v for k, v in durations.items() if k != "total"), abs=0.01
    )


def test_routine_batches_are_not_traced(redis, keys, seattle, seattle_router, monkeypatch):
    monkeypatch.setenv(ENV, "1")
    config, base = seattle
    harness = Harness(redis, keys, config, base, seattle_router)
    routine = Event.new(
        "traffic.incident", source_for("sdot"), {"kind": "collision", "severity": 3},
        location=WEST,
    )  # fmt: skip
    Producer(redis, "sdot", keys).publish(routine)
    harness.run()
    assert redis.xlen(trace_key(keys)) == 0
