"""The archive job: Redis hot tier -> S3, crash-safe, idempotent, honest to the schedule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from botocore.exceptions import ClientError

from jobs import lake
from jobs.archive import Archiver, VerificationError, aggregate_counts, lifecycle_configuration
from jobs.retrieval import History, Query
from queues import hot
from queues.hot import HotBatch, HotEntry
from queues.keys import Keys
from tests.unit import archive_support
from tests.unit.archive_support import T0, add_hot, all_rows, s3_setup, schedule

DAY = timedelta(days=1)

aws = archive_support.aws  # the moto S3 fixture


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


def archiver(redis, s3, settings, now, sched=None):
    return Archiver(redis, Keys("t"), s3, settings.bucket, sched or schedule(), now=lambda: now)


def test_round_trip_archive_trim_retrieve_equals_input(aws, redis):
    settings, s3 = s3_setup()
    keys = Keys("t")
    sent = add_hot(redis, keys, "safety.dispatch", T0, 3 * 24 * 6, step=timedelta(minutes=10))
    sent += add_hot(
        redis,
        keys,
        "traffic.incident",
        T0,
        50,
        location={"type": "LineString", "coordinates": [[-122.33, 47.6], [-122.32, 47.61]]},
        ext1="x",
    )
    report = archiver(redis, s3, settings, T0 + 5 * DAY).run()
    assert report.rows == len(sent)
    assert report.trimmed == len(sent)
    assert redis.xlen(keys.hot("safety.dispatch")) == 0
    assert redis.xlen(keys.hot("traffic.incident")) == 0
    # One object per type, window and event date, under rc=<series>/type=/dt=.
    objects = [
        o["Key"] for o in s3.list_objects_v2(Bucket=settings.bucket, Prefix="events/")["Contents"]
    ]
    assert (
        "events/rc=dispatch-records/type=safety.dispatch/dt=2026-03-10/part-20260310T000000Z.parquet"
        in objects
    )
    assert len(objects) == 4
    history = History(s3, settings.bucket)
    got = list(history.events(Query("safety.dispatch"))) + list(
        history.events(Query("traffic.incident"))
    )
    assert got == sent


def test_only_windows_past_the_hot_window_are_archived(aws, redis):
    settings, s3 = s3_setup()
    keys = Keys("t")
    add_hot(redis, keys, "safety.dispatch", T0, 48, step=timedelta(hours=1))  # two days
    report = archiver(redis, s3, settings, T0 + DAY + DAY + timedelta(hours=12)).run()
    # hot is 1d: at day 2 12:00 only day 0 (whole window before day 1 12:00) is due.
    assert report.rows == 24
    assert redis.xlen(keys.hot("safety.dispatch")) == 24
    assert hot.oldest_ms(redis, keys, "safety.dispatch") == int((T0 + DAY).timestamp() * 1000)


def test_crash_between_upload_and_trim_loses_nothing_and_duplicates_nothing(
    aws, redis, monkeypatch
):
    settings, s3 = s3_setup()
    keys = Keys("t")
    sent = add_hot(redis, keys, "safety.dispatch", T0, 200, step=timedelta(minutes=5))
    job = archiver(redis, s3, settings, T0 + 4 * DAY)

    def killed(self, event_type, ids):
        raise SystemExit("worker killed")

    monkeypatch.setattr(Archiver, "_trim", killed)
    with pytest.raises(SystemExit):
        job.run()
    assert redis.xlen(keys.hot("safety.dispatch")) == 200  # nothing trimmed yet
    monkeypatch.undo()
    report = archiver(redis, s3, settings, T0 + 4 * DAY).run()
    assert report.trimmed == 200
    ids = all_rows(s3, settings.bucket, "events/")
    assert sorted(ids) == sorted(e["id"] for e in sent)  # no loss, no duplicate rows
    # Identical bytes were not uploaded again: each key has one version (locked records).
    versions = s3.list_object_versions(Bucket=settings.bucket, Prefix="events/")["Versions"]
    assert len(versions) == len({v["Key"] for v in versions})


def test_crash_in_the_middle_of_the_trim_is_finished_by_the_rerun(aws, redis, monkeypatch):
    settings, s3 = s3_setup()
    keys = Keys("t")
    sent = add_hot(redis, keys, "traffic.incident", T0, 300, step=timedelta(minutes=1))
    real_trim = hot.trim_window

    def half_then_die(redis_, keys_, event_type, ids):
        real_trim(redis_, keys_, event_type, ids[: len(ids) // 2])
        raise ConnectionError("redis went away")

    monkeypatch.setattr(hot, "trim_window", half_then_die)
    with pytest.raises(ConnectionError):
        archiver(redis, s3, settings, T0 + 4 * DAY).run()
    assert redis.xlen(keys.hot("traffic.incident")) == 150
    monkeypatch.undo()
    report = archiver(redis, s3, settings, T0 + 4 * DAY).run()
    assert report.trimmed == 150
    assert redis.xlen(keys.hot("traffic.incident")) == 0
    assert sorted(all_rows(s3, settings.bucket, "events/")) == sorted(e["id"] for e in sent)
    assert redis.keys("t:archive:*") == []


def test_a_window_locked_by_another_run_is_skipped(aws, redis):
    settings, s3 = s3_setup()
    keys = Keys("t")
    add_hot(redis, keys, "safety.dispatch", T0, 10)
    start_ms = int(T0.timestamp() * 1000)
    other = redis.lock(keys.archive_lock("safety.dispatch", start_ms), timeout=60)
    assert other.acquire(blocking=False)
    report = archiver(redis, s3, settings, T0 + 3 * DAY).run()
    assert [w.skipped for w in report.windows] == ["locked by another run"]
    assert report.summary()["skipped"] == 1
    assert redis.xlen(keys.hot("safety.dispatch")) == 10
    other.release()
    assert archiver(redis, s3, settings, T0 + 3 * DAY).run().trimmed == 10


def test_drop_keeps_nothing_and_aggregate_keeps_only_hourly_counts_per_cell(aws, redis):
    settings, s3 = s3_setup()
    keys = Keys("t")
    add_hot(redis, keys, "iot.heartbeat", T0, 120)
    add_hot(redis, keys, "environment.air_quality", T0, 120, step=timedelta(minutes=1))
    add_hot(
        redis,
        keys,
        "environment.air_quality",
        T0 + timedelta(hours=2),
        3,
        location=None,
        h3cell="8928308280fffff",
    )
    report = archiver(redis, s3, settings, T0 + 3 * DAY).run()
    assert redis.xlen(keys.hot("iot.heartbeat")) == 0
    assert redis.xlen(keys.hot("environment.air_quality")) == 0
    listed = s3.list_objects_v2(Bucket=settings.bucket)["Contents"]
    assert [o["Key"] for o in listed] == [
        "aggregates/rc=air-quality-counts/type=environment.air_quality/dt=2026-03-10/"
        "part-20260310T000000Z.parquet"
    ]
    table = lake.read_parquet(
        s3.get_object(Bucket=settings.bucket, Key=listed[0]["Key"])["Body"].read()
    )
    assert table.column_names == ["type", "hour", "h3cell", "count"]  # no ids, no payloads
    assert sum(table.column("count").to_pylist()) == 123
    assert set(table.column("hour").to_pylist()) == {
        T0,
        T0 + timedelta(hours=1),
        T0 + timedelta(hours=2),
    }
    assert "8828308281fffff" in table.column("h3cell").to_pylist()  # parent at resolution 8
    assert {w.action: w.rows for w in report.windows} == {"drop": 0, "aggregate": 123}


def test_aggregate_counts_keep_unlocated_events_and_coarse_cells():
    import pyarrow as pa

    events = lake.EVENT_SCHEMA.empty_table()
    assert aggregate_counts(events, 8).num_rows == 0
    row = {name: [None] for name in lake.EVENT_SCHEMA.names}
    row.update(type=["x.y"], time=[T0], h3cell=["8428309ffffffff"], recipients=[[]], routed=[T0])
    table = pa.Table.from_pydict(row, schema=lake.EVENT_SCHEMA)
    assert aggregate_counts(table, 8).column("h3cell").to_pylist() == ["8428309ffffffff"]


def test_records_are_locked_and_early_deletion_is_refused(aws, redis):
    settings, s3 = s3_setup()
    keys = Keys("t")
    add_hot(redis, keys, "utility.meter_alarm", T0, 5)  # COMPLIANCE: no personal data
    add_hot(redis, keys, "safety.dispatch", T0, 5)  # GOVERNANCE: personal data
    add_hot(redis, keys, "health.emergency", T0, 5)  # permanent: legal hold
    archiver(redis, s3, settings, T0 + 3 * DAY).run()
    bucket = settings.bucket

    def only_version(prefix):
        version = s3.list_object_versions(Bucket=bucket, Prefix=prefix)["Versions"][0]
        return version["Key"], version["VersionId"]

    key, vid = only_version("events/rc=utility-billing/")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"].year == 2034
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=vid)
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=vid, BypassGovernanceRetention=True)

    key, vid = only_version("events/rc=dispatch-records/")
    assert s3.head_object(Bucket=bucket, Key=key)["ObjectLockMode"] == "GOVERNANCE"
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=vid)
    # Lawful erasure of personal data stays possible for those with the bypass right.
    s3.delete_object(Bucket=bucket, Key=key, VersionId=vid, BypassGovernanceRetention=True)

    key, vid = only_version("events/rc=emergency-incidents/")
    assert s3.head_object(Bucket=bucket, Key=key)["ObjectLockLegalHoldStatus"] == "ON"
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=vid)


def test_storage_class_follows_the_age_of_the_events(aws, redis):
    settings, s3 = s3_setup()
    keys = Keys("t")
    add_hot(redis, keys, "safety.dispatch", T0, 3)
    add_hot(redis, keys, "traffic.incident", T0, 3)
    # A backlog archived 100 days late lands directly in the class for its age.
    archiver(redis, s3, settings, T0 + 100 * DAY).run()
    classes = {
        o["Key"].split("/")[1]: o.get("StorageClass", "STANDARD")
        for o in s3.list_objects_v2(Bucket=settings.bucket, Prefix="events/")["Contents"]
    }
    assert classes == {"rc=dispatch-records": "GLACIER_IR", "rc=traffic-studies": "STANDARD_IA"}


def test_restore_class_objects_are_verified_from_metadata(aws, redis):
    settings, s3 = s3_setup()
    keys = Keys("t")
    sched = schedule(
        **{
            "traffic-studies": {
                "storage": [{"class": "STANDARD"}, {"after": "30d", "class": "GLACIER"}]
            }
        }
    )
    add_hot(redis, keys, "traffic.incident", T0, 4)
    report = archiver(redis, s3, settings, T0 + 60 * DAY, sched).run()
    assert report.trimmed == 4
    head = s3.head_object(Bucket=settings.bucket, Key=report.windows[0].keys[0])
    assert head["StorageClass"] == "GLACIER"
    job = archiver(redis, s3, settings, T0 + 60 * DAY, sched)
    with pytest.raises(VerificationError, match="checksum/rows"):
        job.verify(report.windows[0].keys[0], head["Metadata"]["sha256"], 5)


def test_a_corrupted_upload_is_caught_and_the_hot_tier_kept(aws, redis, monkeypatch):
    settings, s3 = s3_setup()
    keys = Keys("t")
    add_hot(redis, keys, "traffic.incident", T0, 20)
    job = archiver(redis, s3, settings, T0 + 3 * DAY)
    real_put = s3.put_object

    def truncating_put(**kwargs):
        kwargs["Body"] = kwargs["Body"][:-100] + bytes(100)
        kwargs.pop("ChecksumSHA256")
        return real_put(**kwargs)

    monkeypatch.setattr(s3, "put_object", truncating_put)
    with pytest.raises(VerificationError, match="checksum"):
        job.run()
    assert redis.xlen(keys.hot("traffic.incident")) == 20
    monkeypatch.undo()
    assert job.run().trimmed == 20  # the rerun replaces the bad object
    partition = "events/rc=traffic-studies/type=traffic.incident/dt=2026-03-10/"
    key = partition + "part-20260310T000000Z.parquet"
    body = s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
    assert lake.parquet_rows(body) == 20
    with pytest.raises(VerificationError, match="row count"):
        job.verify(key, lake.sha256_b64(body), 21)


def test_unscheduled_types_stay_hot_and_are_reported(aws, redis):
    settings, s3 = s3_setup()
    keys = Keys("t")
    add_hot(redis, keys, "water.main_break", T0, 7)
    report = archiver(redis, s3, settings, T0 + 30 * DAY).run()
    assert report.unscheduled == ["water.main_break"]
    assert redis.xlen(keys.hot("water.main_break")) == 7
    assert report.summary() == {
        "windows": 0,
        "skipped": 0,
        "rows": 0,
        "trimmed": 0,
        "objects": 0,
        "unscheduled": ["water.main_break"],
    }


def test_late_events_go_to_the_partition_of_their_event_date(aws, redis):
    settings, s3 = s3_setup()
    keys = Keys("t")
    late = add_hot(fakeredis.FakeRedis(), keys, "traffic.incident", T0 - DAY, 1)[0]
    # Routed on the 10th: one event of that day, one that happened on the 9th (no recipients).
    on_time = add_hot(redis, keys, "traffic.incident", T0, 1)
    ms = int((T0 + timedelta(hours=1)).timestamp() * 1000)
    hot.hot_append(redis, keys, json.dumps(late), "", "", "traffic.incident", f"{ms}-0")
    report = archiver(redis, s3, settings, T0 + 3 * DAY).run()
    partition = "events/rc=traffic-studies/type=traffic.incident/dt="
    assert report.windows[0].keys == [
        partition + "2026-03-09/part-20260310T000000Z.parquet",
        partition + "2026-03-10/part-20260310T000000Z.parquet",
    ]
    history = History(s3, settings.bucket)
    table = history.table(Query("traffic.incident"))
    assert table.column("recipients").to_pylist() == [[], ["fire", "spd"]]
    assert list(history.events(Query("traffic.incident"))) == [late, *on_time]


def test_an_entry_that_is_not_one_event_is_refused():
    batch = HotBatch.of([HotEntry("1-0", b'{"id":"x"} {"id":"y"}', "spd", "1-0")])
    with pytest.raises(ValueError, match="1 hot entries parsed as 2 events"):
        lake.encode_events(batch)
    body = b'{"id": "x",\n "time": "2026-03-10T00:00:00Z"}'  # pretty-printed: re-serialised
    pretty = HotBatch.of([HotEntry("1-0", body, "spd", "")])
    assert lake.encode_events(pretty).column("id").to_pylist() == ["x"]


def test_archive_uses_the_redis_clock_by_default(aws, redis):
    settings, s3 = s3_setup()
    job = Archiver(redis, Keys("t"), s3, settings.bucket, schedule())
    assert abs((job._now() - datetime.now(UTC)).total_seconds()) < 5


def test_lifecycle_has_one_rule_per_retention_class_prefix():
    config = lifecycle_configuration(schedule())
    rules = {r["ID"]: r for r in config["Rules"]}
    assert "rc-telemetry-ephemeral" not in rules  # drop: nothing stored
    assert rules["rc-dispatch-records"]["Filter"] == {"Prefix": "events/rc=dispatch-records/"}
    assert rules["rc-dispatch-records"]["Transitions"] == [
        {"Days": 30, "StorageClass": "STANDARD_IA"},
        {"Days": 90, "StorageClass": "GLACIER_IR"},
    ]
    assert rules["rc-air-quality-counts"]["Filter"] == {
        "Prefix": "aggregates/rc=air-quality-counts/"
    }
    assert "Transitions" not in rules["rc-vehicle-telemetry"]
    assert all(r["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7} for r in rules.values())
    assert all("Expiration" not in r for r in rules.values())  # disposition deletes, not S3


def test_backfill_into_an_archived_window_merges_instead_of_replacing(aws, redis):
    settings, s3 = s3_setup()
    keys = Keys("t")
    first = add_hot(redis, keys, "traffic.incident", T0, 5, step=timedelta(hours=1))
    archiver(redis, s3, settings, T0 + 3 * DAY).run()
    # Redis refuses ids below a stream's last id; only a recreated stream (restored from an
    # older snapshot, or deleted by hand) can hold entries for an archived window again.
    redis.delete(keys.hot("traffic.incident"))
    late = add_hot(
        redis, keys, "traffic.incident", T0 + timedelta(minutes=30), 3, step=timedelta(hours=1)
    )
    report = archiver(redis, s3, settings, T0 + 3 * DAY).run()
    assert report.rows == 3
    ids = all_rows(s3, settings.bucket, "events/")
    assert sorted(ids) == sorted(e["id"] for e in first + late)


def test_an_emptied_window_and_an_s3_error_leave_the_hot_tier_alone(aws, redis, monkeypatch):
    settings, s3 = s3_setup()
    keys = Keys("t")
    job = archiver(redis, s3, settings, T0 + 3 * DAY)
    series = schedule().series_for("traffic.incident")
    # Another run emptied the window between listing and locking: nothing to do.
    empty = job.archive_window("traffic.incident", series, int(T0.timestamp() * 1000), T0 + 3 * DAY)
    assert (empty.rows, empty.keys, empty.trimmed) == (0, [], 0)
    add_hot(
        redis,
        keys,
        "traffic.incident",
        T0,
        3,
        location={"type": "Point", "coordinates": [-122.3, 47.6]},
    )

    def forbidden(**kwargs):
        raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")

    monkeypatch.setattr(s3, "head_object", forbidden)
    with pytest.raises(ClientError):
        job.run()
    assert redis.xlen(keys.hot("traffic.incident")) == 3
    monkeypatch.undo()
    job.run()
    table = History(s3, settings.bucket).table(Query("traffic.incident"))
    assert table.column("lat").to_pylist() == [47.6] * 3  # a GeoJSON Point is indexed too


def test_buckets_outside_us_east_1(aws):
    settings = lake.S3Settings(bucket="eu-archive", region="eu-west-1")
    s3 = settings.client()
    lake.ensure_buckets(s3, settings)
    lake.ensure_buckets(s3, settings)  # idempotent
    assert s3.get_bucket_location(Bucket="eu-archive")["LocationConstraint"] == "eu-west-1"
    assert (
        s3.get_object_lock_configuration(Bucket="eu-archive-ledger")["ObjectLockConfiguration"][
            "ObjectLockEnabled"
        ]
        == "Enabled"
    )


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CITYRELAY_S3_BUCKET", "town-archive")
    monkeypatch.delenv("CITYRELAY_S3_ENDPOINT", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.setenv("CITYRELAY_S3_LEDGER_BUCKET", "town-ledger")
    settings = lake.S3Settings.from_env()
    assert (settings.bucket, settings.endpoint_url, settings.region) == (
        "town-archive",
        "http://127.0.0.1:5000",
        "us-west-2",
    )
    assert settings.ledger_bucket == "town-ledger"
    assert lake.parse_key("events/rc=a/type=b.c/README") is None


def test_a_window_lock_that_expired_mid_run_is_reported_not_fatal(aws, redis, monkeypatch):
    settings, s3 = s3_setup()
    keys = Keys("t")
    add_hot(redis, keys, "traffic.incident", T0, 4)
    real_trim = Archiver._trim

    def trim_after_lock_expiry(self, event_type, ids):
        redis.delete(keys.archive_lock(event_type, int(T0.timestamp() * 1000)))
        return real_trim(self, event_type, ids)

    monkeypatch.setattr(Archiver, "_trim", trim_after_lock_expiry)
    (window,) = archiver(redis, s3, settings, T0 + 3 * DAY).run().windows
    assert window.trimmed == 4 and window.note == "window lock expired before release"


def test_a_window_trim_removes_exactly_the_entries_it_read(redis):
    keys = Keys("w")
    for n in range(1, 11):
        hot.hot_append(redis, keys, b"{}", "fire", "1-0", "a.b", f"{n * 1000}-0")

    def left() -> list[int]:
        return [e.routed_ms for e in hot.read_window(redis, keys, "a.b", 0, 2**62)]

    # A window with older entries still hot (another run's window): those stay.
    middle = hot.read_batch(redis, keys, "a.b", 3000, 7000).ids
    assert hot.trim_window(redis, keys, "a.b", middle) == 4
    assert left() == [1000, 2000, 7000, 8000, 9000, 10000]
    # The oldest window; then one read before an entry was appended: exactly what was read.
    assert hot.trim_window(redis, keys, "a.b", hot.read_batch(redis, keys, "a.b", 0, 3000).ids) == 2
    read = hot.read_batch(redis, keys, "a.b", 7000, 9000).ids
    hot.hot_append(redis, keys, b"{}", "fire", "1-0", "a.b", "11000-0")
    assert hot.trim_window(redis, keys, "a.b", read) == 2
    assert left() == [9000, 10000, 11000]
    assert hot.trim_window(redis, keys, "a.b", read) == 0  # a repeated trim deletes nothing
    assert hot.trim_window(redis, keys, "a.b", []) == 0
    # The largest sequence number of a millisecond: the next id is the next millisecond's.
    hot.hot_append(redis, keys, b"{}", "fire", "1-0", "a.b", "12000-18446744073709551615")
    hot.hot_append(redis, keys, b"{}", "fire", "1-0", "a.b", "12001-0")
    assert hot.trim_window(redis, keys, "a.b", [b"9000-0", b"10000-0", b"11000-0"]) == 3
    assert hot.trim_window(redis, keys, "a.b", [b"12000-18446744073709551615"]) == 1
    assert left() == [12001]
