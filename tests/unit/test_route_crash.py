"""A route job that dies right after its delivery script and runs again (RQ re-queues an
abandoned job): the counters come out exact and every emergency is still tracked, so its
escalation is not lost with the crash."""

from __future__ import annotations

import json

import pytest
from rq.timeouts import JobTimeoutException

from city.catalog import EventCatalog
from city.events import Event, source_for
from jobs import route
from jobs.context import RouteContext
from queues.metrics import handled, read_stats

WEST = {"lat": 47.6205, "lon": -122.3493}


class Killed(Exception):
    """Stands for the worker process dying at this point."""


def items(config, events: list[tuple[str, Event]], ing_ms: int) -> list[dict]:
    catalog = EventCatalog(config)
    return [
        {
            "e": catalog.accept(json.dumps(e.to_wire() | {"department": d}).encode(), d),
            "ing": f"{ing_ms}-{n}",
        }  # fmt: skip
        for n, (d, e) in enumerate(events)
    ]


def test_a_rerun_after_a_crash_counts_once_and_still_tracks_the_emergency(
    redis, keys, seattle, seattle_router, monkeypatch
):
    config, base = seattle
    context = RouteContext(config=config, router=seattle_router, keys=keys, base_dir=base)
    data = {"kind": "collision", "severity": 2}
    routine = [("sdot", Event.new("traffic.incident", source_for("sdot"), data, location=WEST))
               for _ in range(3)]  # fmt: skip
    mci = Event.new("health.emergency", source_for("ems"),
                    {"incident_number": "MCI-1", "kind": "mass_casualty", "patients": 9},
                    location=WEST)  # fmt: skip
    ing_ms = int(redis.time()[0]) * 1000 - 2000
    batch = items(config, [*routine, ("ems", mci)], ing_ms)

    real_track = route.track_emergencies

    def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(route, "track_emergencies", die)
    with pytest.raises(Killed):
        route.deliver_items(context, redis, batch)
    assert not redis.exists(keys.emergency(mci.id))  # delivered, not tracked: the crash window
    monkeypatch.setattr(route, "track_emergencies", real_track)
    again = route.deliver_items(context, redis, batch)

    assert again["duplicates"] == 4 and "delivered" not in again
    stats = read_stats(redis, keys)
    assert stats["delivered"] == 4 and stats["duplicates"] == 4
    assert handled(stats) >= 4  # delivered counts once, whatever the re-runs
    expected = {d.dept for d in seattle_router.route(batch[0]["e"])}
    for dept in expected:
        assert stats[f"delivered:{dept}"] == 3 + (dept in _recipients(seattle_router, batch[3]))
    tracking = {k.decode(): v.decode() for k, v in redis.hgetall(keys.emergency(mci.id)).items()}
    assert tracking, "the emergency was never tracked: no escalation would follow"
    deadlines = [int(v) for k, v in tracking.items() if k.endswith("|deadline")]
    assert deadlines and min(deadlines) > ing_ms  # counted from ingest, not from the re-run
    assert min(deadlines) - ing_ms <= 15 * 60 * 1000


def _recipients(router, item) -> set[str]:
    return {d.dept for d in router.route(item["e"])}


def test_the_jobs_timeout_fails_the_job_and_never_dead_letters_the_event(
    redis, keys, seattle, seattle_router, monkeypatch
):
    """RQ's JobTimeoutException is an Exception: the batch's one-by-one fallback caught it, so a
    job that ran out of time routed its batch again with no deadline left (RQ's alarm fires
    once), or dead-lettered the event it interrupted as unroutable."""
    config, base = seattle
    context = RouteContext(config=config, router=seattle_router, keys=keys, base_dir=base)
    data = {"kind": "collision", "severity": 2}
    event = Event.new("traffic.incident", source_for("sdot"), data, location=WEST)
    batch = items(config, [("sdot", event)], int(redis.time()[0]) * 1000)
    calls = []

    def out_of_time(*args, **kwargs):
        calls.append(1)
        raise JobTimeoutException("Task exceeded maximum timeout value (5 seconds)")

    monkeypatch.setattr(seattle_router, "route_batch", out_of_time)
    with pytest.raises(JobTimeoutException):
        route.deliver_items(context, redis, batch)
    assert calls == [1]  # not routed again one by one
    assert redis.xlen(keys.deadletter) == 0


def test_one_unroutable_event_is_still_dead_lettered_alone(
    redis, keys, seattle, seattle_router, monkeypatch
):
    config, base = seattle
    context = RouteContext(config=config, router=seattle_router, keys=keys, base_dir=base)
    data = {"kind": "collision", "severity": 2}
    good, bad = (Event.new("traffic.incident", source_for("sdot"), data, location=WEST)
                 for _ in range(2))  # fmt: skip
    batch = items(config, [("sdot", good), ("sdot", bad)], int(redis.time()[0]) * 1000)
    real = seattle_router.route_batch

    def fails_on_bad(events, *args, **kwargs):
        if any(e["id"] == bad.id for e in events):
            raise ValueError("self-intersecting area")
        return real(events, *args, **kwargs)

    monkeypatch.setattr(seattle_router, "route_batch", fails_on_bad)
    counters = route.deliver_items(context, redis, batch)
    assert counters["delivered"] == 1
    (entry,) = redis.xrange(keys.deadletter)
    assert b"self-intersecting area" in b"".join(entry[1].values())
