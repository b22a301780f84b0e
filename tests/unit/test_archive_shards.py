"""A partitioned city's shards archive into one bucket: objects named per shard (issue #16).

Two shards (URL shards: two Redis; slot groups: two prefixes on one Redis) archive the same
type in the same window into the city's one bucket: two objects, none overwritten; retrieval
of the day returns both shards' events; disposition destroys both when due, in one ledger;
an unpartitioned city's names are those of every lake written before.
"""

from __future__ import annotations

from datetime import timedelta

import fakeredis
import pytest
import yaml

from city.retention import EXAMPLE_RETENTION
from jobs import disposition, lake
from jobs.archive import Archiver, archive_job, archive_shard
from jobs.archive import job as archive_job_module
from jobs.disposition import Disposer, Ledger, disposition_job
from jobs.retrieval import History, Query
from queues.keys import Keys
from queues.partition import PartitionError
from tests.unit import archive_support
from tests.unit.archive_support import T0, add_hot, all_rows, s3_setup, schedule
from workers import cli
from workers.runtime import Runtime

DAY = timedelta(days=1)
TYPE = "transit.vehicle_position"  # series vehicle-telemetry: daily windows, destroyed at 30 d
PREFIX = f"events/rc=vehicle-telemetry/type={TYPE}/dt=2026-03-10/"
URL_SHARDS = {
    "default": "a",
    "shards": {"a": {"url_env": "REDIS_URL_A"}, "b": {"url_env": "REDIS_URL_B"}},
}
SLOT_GROUPS = {
    "default": "a",
    "shards": {"a": {"prefix": "{seattle-a}"}, "b": {"prefix": "{seattle-b}"}},
}

aws = archive_support.aws  # the moto S3 fixture


def city_yaml(tmp_path, monkeypatch, partitions):
    """A city YAML with the example retention schedule and `partitions` (None: none)."""
    data = {"city": "Testville", "retention": EXAMPLE_RETENTION}
    if partitions is not None:
        data["partitions"] = partitions
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("CITYRELAY_CONFIG", str(path))
    return path


def keys_under(s3, bucket, prefix):
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def test_two_shards_one_window_one_bucket_two_objects_both_retrieved_both_disposed(aws):
    settings, s3 = s3_setup()
    sched = schedule()
    keys = Keys("t")  # URL shards: one prefix, two Redis
    sent = {}
    for shard, offset in (("a", 0), ("b", 7)):
        redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        # The same type, the same day and window, other events on each shard.
        sent[shard] = add_hot(redis, keys, TYPE, T0 + timedelta(minutes=offset), 10, step=DAY / 10)
        archiver = Archiver(
            redis, keys, s3, settings.bucket, sched, now=lambda: T0 + 3 * DAY, shard=shard
        )
        report = archiver.run()
        assert report.rows == report.trimmed == 10
        assert redis.xlen(keys.hot(TYPE)) == 0
    # Two objects in the one partition, each holding its own shard's rows: nothing overwritten.
    assert sorted(keys_under(s3, settings.bucket, PREFIX)) == [
        f"{PREFIX}part-20260310T000000Z-a.parquet",
        f"{PREFIX}part-20260310T000000Z-b.parquet",
    ]
    for shard in ("a", "b"):
        stored = all_rows(s3, settings.bucket, f"{PREFIX}part-20260310T000000Z-{shard}.parquet")
        assert stored == [e["id"] for e in sent[shard]]
    # One retrieval of the day, with one listing of the partition, returns both shards'.
    day = Query(TYPE, start=T0, end=T0 + DAY)
    got = list(History(s3, settings.bucket).events(day))
    assert got == sorted(sent["a"] + sent["b"], key=lambda e: e["time"])
    # Day 0 is past its 30 days at day 31: both shards' objects go, under one ledger record.
    report = Disposer(s3, settings, sched).run(T0 + 31 * DAY + timedelta(hours=1))
    both = [f"{PREFIX}part-20260310T000000Z-{shard}.parquet" for shard in ("a", "b")]
    assert [(r["count"], sorted(r["keys"])) for r in report.records] == [(20, both)]
    versions = s3.list_object_versions(Bucket=settings.bucket, Prefix=PREFIX)
    assert versions.get("Versions", []) == [] and versions.get("DeleteMarkers", []) == []
    assert Ledger(s3, settings.ledger_bucket).verify() == []


def test_unpartitioned_names_are_unchanged_and_both_forms_parse():
    ms = int(T0.timestamp() * 1000)
    plain = lake.object_key(lake.EVENTS, "vehicle-telemetry", TYPE, T0.date(), ms)
    assert plain == f"{PREFIX}part-20260310T000000Z.parquet"
    sharded = lake.object_key(lake.AGGREGATES, "rc1", "a.b", T0.date(), ms, shard="west-2")
    assert (
        sharded == "aggregates/rc=rc1/type=a.b/dt=2026-03-10/part-20260310T000000Z-west-2.parquet"
    )
    parts = lake.parse_key(plain)
    assert parts is not None and (parts.window, parts.shard) == ("20260310T000000Z", None)
    parts = lake.parse_key(sharded)
    assert parts is not None and (parts.kind, parts.window, parts.shard) == (
        "aggregates",
        "20260310T000000Z",
        "west-2",
    )
    assert lake.parse_key(f"{PREFIX}part-20260310T000000Z-.parquet") is None
    assert lake.parse_key(f"{PREFIX}part-20260310T000000Z-B.parquet") is None


def test_archive_job_names_objects_with_the_url_shard_it_serves(aws, tmp_path, monkeypatch):
    settings, s3 = s3_setup()
    city_yaml(tmp_path, monkeypatch, URL_SHARDS)
    redis = fakeredis.FakeRedis()
    monkeypatch.setattr(archive_job_module, "job_redis", lambda: redis)
    add_hot(redis, Keys("u"), TYPE, T0, 3)
    monkeypatch.delenv("CITYRELAY_SHARD", raising=False)
    with pytest.raises(PartitionError, match="set CITYRELAY_SHARD"):
        archive_job("u")  # a partitioned city refuses to guess its shard
    monkeypatch.setenv("CITYRELAY_SHARD", "b")
    assert archive_job("u")["trimmed"] == 3
    assert keys_under(s3, settings.bucket, "events/") == [
        f"{PREFIX}part-20260310T000000Z-b.parquet"
    ]


def test_archive_job_of_a_slot_group_names_objects_with_its_group(aws, tmp_path, monkeypatch):
    settings, s3 = s3_setup()
    city_yaml(tmp_path, monkeypatch, SLOT_GROUPS)
    monkeypatch.delenv("CITYRELAY_SHARD", raising=False)
    redis = fakeredis.FakeRedis()  # one cluster: both groups' keys on one Redis
    monkeypatch.setattr(archive_job_module, "job_redis", lambda: redis)
    for prefix, counts in (("{seattle-a}", 4), ("{seattle-b}", 6)):
        add_hot(redis, Keys(prefix), TYPE, T0, 4)
        add_hot(redis, Keys(prefix), "environment.air_quality", T0, counts)  # an aggregate series
        assert archive_job(prefix)["trimmed"] == 4 + counts
    assert sorted(keys_under(s3, settings.bucket, PREFIX)) == [
        f"{PREFIX}part-20260310T000000Z-a.parquet",
        f"{PREFIX}part-20260310T000000Z-b.parquet",
    ]
    assert len(list(History(s3, settings.bucket).events(Query(TYPE)))) == 8
    # Hourly counts too: one object per group, each its own group's count.
    aggregates = "aggregates/rc=air-quality-counts/type=environment.air_quality/dt=2026-03-10/"
    found = {}
    for key in keys_under(s3, settings.bucket, aggregates):
        table = lake.read_parquet(s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read())
        found[key[len(aggregates) :]] = sum(table.column("count").to_pylist())
    assert found == {"part-20260310T000000Z-a.parquet": 4, "part-20260310T000000Z-b.parquet": 6}


def test_archive_shard_without_partitions_is_none(tmp_path, monkeypatch):
    path = city_yaml(tmp_path, monkeypatch, None)
    assert archive_shard("t", path, environ={"CITYRELAY_SHARD": "b"}) is None


def test_archive_run_command_names_objects_with_the_shard(aws, tmp_path, monkeypatch, capsys):
    settings, s3 = s3_setup()
    city_yaml(tmp_path, monkeypatch, URL_SHARDS)
    monkeypatch.setenv("CITYRELAY_SHARD", "a")
    redis = fakeredis.FakeRedis()
    monkeypatch.setattr(Runtime, "redis", lambda self, **kw: redis)
    add_hot(redis, Keys("t"), TYPE, T0, 5)
    assert cli.main(["--prefix", "t", "archive", "run"]) == 0
    capsys.readouterr()
    assert keys_under(s3, settings.bucket, "events/") == [
        f"{PREFIX}part-20260310T000000Z-a.parquet"
    ]


def test_disposition_of_every_shard_takes_one_city_wide_lock(aws, tmp_path, monkeypatch):
    s3_setup()
    city_yaml(tmp_path, monkeypatch, URL_SHARDS)
    control = fakeredis.FakeRedis(server=fakeredis.FakeServer())  # shard a, the control shard
    own = fakeredis.FakeRedis(server=fakeredis.FakeServer())  # shard b
    monkeypatch.setenv("REDIS_URL_A", "redis://control.invalid:6379/0")
    urls = []
    monkeypatch.setattr(disposition, "redis_from_url", lambda url: urls.append(url) or control)
    monkeypatch.setattr(archive_job_module, "job_redis", lambda: own)
    monkeypatch.setenv("CITYRELAY_SHARD", "b")
    lock = control.lock(Keys("u").disposition_lock, timeout=60)
    assert lock.acquire(blocking=False)  # shard a's run holds it
    assert disposition_job("u") == {"skipped": "another disposition run holds the lock"}
    assert urls == ["redis://control.invalid:6379/0"]
    lock.release()
    assert disposition_job("u")["records"] == 0
    assert own.keys() == []  # no lock of its own on shard b
    monkeypatch.setenv("CITYRELAY_SHARD", "a")  # the control shard locks on its own Redis
    parts = archive_job_module.load_partitions()
    assert disposition.city_lock_home(control, "u", parts) == (control, Keys("u"))
    assert urls == ["redis://control.invalid:6379/0"] * 2  # one per run of shard b, none here


def test_disposition_lock_of_slot_groups_is_the_control_groups(tmp_path, monkeypatch):
    redis = fakeredis.FakeRedis()
    parts = archive_job_module.load_partitions(city_yaml(tmp_path, monkeypatch, SLOT_GROUPS))
    for prefix in ("{seattle-a}", "{seattle-b}"):
        home, keys = disposition.city_lock_home(redis, prefix, parts)
        assert home is redis and keys == Keys("{seattle-a}")
    home, keys = disposition.city_lock_home(redis, "t", None)
    assert home is redis and keys == Keys("t")
