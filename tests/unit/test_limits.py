"""Limits on fakeredis: bounded inboxes with alerts, trimmed ingest streams, backpressure."""

from __future__ import annotations

import json

import pytest

from city.config import LimitsConfig
from city.events import Event, source_for
from queues.limits import Backpressure, MemoryGuard, watermarks
from queues.snapshot import city_snapshot
from queues.streams import Producer
from tests.pipeline_harness import Harness
from tests.unit.test_observe import scrape
from workers.cli import main
from workers.cli.status import report

WEST = {"lat": 47.6205, "lon": -122.3493}


def incidents(n: int) -> list[Event]:
    data = {"kind": "collision", "severity": 2}
    return [
        Event.new("traffic.incident", source_for("sdot"), data, location=WEST) for _ in range(n)
    ]


def harness_with(redis, keys, seattle, router, **limits) -> Harness:
    config, base = seattle
    bounded = config.model_copy(update={"limits": LimitsConfig(**limits)})
    return Harness(redis, keys, bounded, base, router)


def alerts(redis, keys) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in redis.xrange(keys.alerts)
    ]


def stats(redis, keys) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in redis.hgetall(keys.stats).items()}


def test_an_inbox_nobody_reads_stays_bounded_with_one_alert_and_every_trim_counted(
    redis, keys, seattle, seattle_router
):
    h = harness_with(redis, keys, seattle, seattle_router, inbox_max_len=1000)
    events = incidents(1500)
    for start in range(0, 1500, 300):  # several batches: the alert is raised once
        Producer(redis, "sdot", keys).publish_many(events[start : start + 300])
        h.run()
    recipients = {
        d.dept for d in seattle_router.route(events[0].to_wire() | {"department": "sdot"})
    }
    counters = stats(redis, keys)
    for dept in recipients:
        length = redis.xlen(keys.inbox(dept))
        assert 1000 <= length <= 1100  # XTRIM ~ removes whole nodes
        assert counters[f"inbox_trimmed:{dept}"] == 1500 - length
    raised = [a for a in alerts(redis, keys) if a["kind"] == "inbox.backlog"]
    assert sorted(a["dept"] for a in raised) == sorted(recipients)
    # Nothing is lost for the city: every event is still in the hot tier for the archive.
    assert redis.xlen(keys.hot("traffic.incident")) == 1500
    # Operators see it: the exporter and `cityrelay status`.
    metrics = scrape(redis, keys, sorted(recipients))
    for dept in recipients:
        trimmed = metrics["cityrelay_inbox_trimmed_total"][(("department", dept),)]
        assert trimmed == counters[f"inbox_trimmed:{dept}"]
    status = report(city_snapshot(redis, keys, sorted(recipients)))
    assert status["departments"]["spd-west"]["inbox"]["trimmed"] > 0


def test_the_alarm_comes_before_anything_is_trimmed(redis, keys, seattle, seattle_router):
    h = harness_with(redis, keys, seattle, seattle_router, inbox_max_len=1000,
                     inbox_alarm_ratio=0.5)  # fmt: skip
    Producer(redis, "sdot", keys).publish_many(incidents(600))
    h.run()
    assert redis.xlen(keys.inbox("spd-west")) == 600
    assert not [k for k in stats(redis, keys) if k.startswith("inbox_trimmed:")]
    raised = [a for a in alerts(redis, keys) if a["dept"] == "spd-west"]
    assert len(raised) == 1  # raised by the batch that crossed 500, not again by the next
    assert 500 <= int(raised[0]["length"]) <= 600 and raised[0]["trimmed"] == "0"


def test_a_department_can_have_its_own_inbox_bound(seattle):
    config, _ = seattle
    doc = config.model_dump()
    doc["departments"][0]["inbox_max_len"] = 2000
    custom = type(config).model_validate(doc)
    first, second = custom.departments[0].id, custom.departments[1].id
    assert custom.inbox_max_len(first) == 2000
    assert custom.inbox_max_len(second) == custom.limits.inbox_max_len


def test_memory_watermarks_need_low_below_high():
    assert watermarks(LimitsConfig(), 1000) == (800, 700)
    assert watermarks(LimitsConfig(), 0) == (None, None)
    assert watermarks(LimitsConfig(memory_high_mb=100), 0) == (100 << 20, int((100 << 20) * 7 / 8))
    with pytest.raises(ValueError, match="memory_low_ratio must be below"):
        LimitsConfig(memory_low_ratio=0.9)


def test_acknowledged_ingest_entries_are_trimmed_and_unacknowledged_ones_kept(
    redis, keys, seattle, seattle_router
):
    h = harness_with(redis, keys, seattle, seattle_router)
    producer = Producer(redis, "sdot", keys)
    producer.publish_many(incidents(30))
    h.ingest_all()
    stream = keys.ingest("sdot")
    producer.publish_many(incidents(20))
    # A consumer reads the next 20 and dies before acknowledging them.
    limbo = h.ingest.streams.read("crashed", 100, None)
    assert len(limbo) == 20 and redis.xlen(stream) == 50
    h.ingest.recover()  # claim_idle_ms has not passed: nothing reclaimed, acked ones trimmed
    assert [e.decode() for e, _ in redis.xrange(stream)] == [e.id for e in limbo]
    h.ingest.routing = h.ingest.routing.model_copy(update={"claim_idle_ms": 0})
    h.ingest.recover()  # now reclaimed, routed, acknowledged and trimmed
    h.work("routine")
    assert redis.xlen(stream) == 0
    assert len(h.inbox_ids("spd-west")) == 50


def test_routine_publishes_are_refused_under_backpressure_and_emergencies_pass(redis, keys):
    redis.set(keys.backpressure, json.dumps({"used_mb": 900, "high_mb": 800}))
    producer = Producer(redis, "sdot", keys)
    routine = incidents(3)
    with pytest.raises(Backpressure, match="900 MB used") as refused:
        producer.publish(routine[0])
    assert refused.value.refused == [routine[0].id]
    urgent = Event.new("traffic.incident", source_for("sdot"), {"kind": "collision",
                       "severity": 5}, location=WEST, priority="emergency")  # fmt: skip
    assert producer.publish(urgent) == urgent.id
    with pytest.raises(Backpressure) as mixed:
        producer.publish_many([*routine[1:], urgent])
    assert mixed.value.accepted == [urgent.id]
    assert mixed.value.refused == [e.id for e in routine[1:]]
    assert redis.xlen(keys.ingest("sdot")) == 0
    assert redis.xlen(keys.ingest("sdot", "emergency")) == 2
    assert scrape(redis, keys, ["sdot"])["cityrelay_backpressure"][()] == 1
    assert report(city_snapshot(redis, keys, ["sdot"]))["backpressure"]["used_mb"] == 900
    redis.delete(keys.backpressure)
    assert scrape(redis, keys, ["sdot"])["cityrelay_backpressure"][()] == 0
    producer.gauge.interval = 0  # type: ignore[union-attr]
    assert producer.publish_many(routine) == [e.id for e in routine]


def test_the_guard_sets_and_lowers_the_flag_with_hysteresis(redis, keys, monkeypatch):
    used = {"used_memory": 850, "maxmemory": 1000}
    monkeypatch.setattr(redis, "info", lambda section=None: dict(used))
    guard = MemoryGuard(redis, keys, LimitsConfig())
    assert guard.check().pressure and redis.get(keys.backpressure)
    used["used_memory"] = 750  # between the watermarks: the flag stays
    assert guard.check().pressure and redis.ttl(keys.backpressure) > 0
    used["used_memory"] = 650
    assert not guard.check().pressure and redis.get(keys.backpressure) is None
    used["used_memory"] = 750  # rising again, still below high: stays off
    assert not guard.check().pressure


def test_cli_publish_exits_75_under_backpressure(redis, keys, monkeypatch, capsys):
    import workers.runtime as runtime

    monkeypatch.setattr(runtime.Runtime, "redis", lambda self, **kw: redis)
    redis.set(keys.backpressure, json.dumps({"used_mb": 900, "high_mb": 800}))
    data = '{"kind": "collision", "severity": 1}'
    args = ["--prefix", keys.prefix, "publish", "--dept", "sdot", "--type", "traffic.incident",
            "--lat", "47.62", "--lon", "-122.35", "--data", data]  # fmt: skip
    assert main(args) == 75
    assert "try again later" in capsys.readouterr().err


def test_a_server_without_memory_figures_means_no_backpressure_not_a_crash(redis, keys):
    """The embedded stand-in (fakeredis) has no INFO: the guard stands down, once."""
    guard = MemoryGuard(redis, keys, LimitsConfig(memory_high_mb=1))
    assert not guard.check().pressure and guard.unavailable
    assert not guard.check().pressure and redis.get(keys.backpressure) is None
