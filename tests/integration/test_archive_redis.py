"""The hot tier and the archive against a real Redis (unique key prefix; only our keys deleted)."""

from __future__ import annotations

import json
from datetime import timedelta
from uuid import uuid4

import pytest
from redis import Redis

from jobs.archive import Archiver
from jobs.retrieval import History, Query
from queues import hot
from queues.keys import Keys
from tests.unit import archive_support
from tests.unit.archive_support import T0, add_hot, make_event, s3_setup, schedule
from workers import cli
from workers.runtime import Runtime

pytestmark = pytest.mark.integration
aws = archive_support.aws


@pytest.fixture
def real():
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    keys = Keys(f"t{uuid4().hex[:8]}")
    yield redis, keys
    for key in redis.scan_iter(match=f"{keys.prefix}:*", count=1000):
        redis.delete(key)


def test_auto_ids_are_routing_time_and_round_trip_through_s3(aws, real):
    redis, keys = real
    settings, s3 = s3_setup()
    event = make_event("safety.dispatch", T0, 1)
    pipe = redis.pipeline()
    hot.hot_append(
        pipe, keys, json.dumps(event).encode(), ["fire", "spd"], "1-0", "safety.dispatch"
    )
    pipe.execute()
    (entry,) = hot.read_window(redis, keys, "safety.dispatch", 0, 2**62)
    seconds, _ = redis.time()
    assert abs(entry.routed_ms / 1000 - seconds) < 5  # the entry id is the routing time
    assert json.loads(entry.event) == event and entry.ingest_id == "1-0"
    assert hot.hot_types(redis, keys) == ["safety.dispatch"]
    # Raw window reads use their own client: the caller's replies are parsed as usual.
    assert isinstance(redis.xrange(keys.hot("safety.dispatch"))[0][1], dict)
    # Not due yet by the Redis clock (hot = 1 day): nothing moves.
    assert Archiver(redis, keys, s3, settings.bucket, schedule()).run().rows == 0
    assert redis.xlen(keys.hot("safety.dispatch")) == 1


def test_archive_trims_exactly_what_it_verified(aws, real):
    redis, keys = real
    settings, s3 = s3_setup()
    sent = add_hot(redis, keys, "traffic.incident", T0, 2000, step=timedelta(minutes=1))
    report = Archiver(redis, keys, s3, settings.bucket, schedule()).run()  # Redis clock: due
    assert report.rows == 2000 and report.trimmed == 2000
    assert redis.xlen(keys.hot("traffic.incident")) == 0
    got = list(History(s3, settings.bucket).events(Query("traffic.incident")))
    assert got == sent


def test_hot_report_and_alarm_from_the_command_line(real, monkeypatch, capsys):
    redis, keys = real
    add_hot(redis, keys, "a.b", T0, 50)
    add_hot(redis, keys, "c.d", T0 + timedelta(days=1), 5)
    report = hot.hot_report(redis, keys, alarm_bytes=10**9)
    assert [(s.event_type, s.length) for s in report.streams] == [("a.b", 50), ("c.d", 5)]
    assert report.total_events == 55 and report.total_bytes > 1000 and not report.alarm
    assert report.streams[1].oldest_ms == int((T0 + timedelta(days=1)).timestamp() * 1000)
    assert hot.hot_report(redis, keys, alarm_bytes=100).alarm
    monkeypatch.setattr(Runtime, "redis", lambda self, **kw: redis)
    assert cli.main(["--prefix", keys.prefix, "archive", "status"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 55
    assert cli.main(["--prefix", keys.prefix, "archive", "status", "--alarm-mb", "0"]) == 1
