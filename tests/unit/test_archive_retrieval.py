"""Retrieval: slices years back, reading only the partitions that can match."""

from __future__ import annotations

import io
import json
import socket
from datetime import UTC, date, datetime, timedelta

import fakeredis
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from jobs import lake
from jobs.archive import Archiver
from jobs.retrieval import (
    History,
    Query,
    RestoreRequired,
    haversine_m,
    month_bounds,
    parse_near,
    parse_when,
    to_geojson,
    write_jsonl,
)
from queues.keys import Keys
from tests.unit import archive_support
from tests.unit.archive_support import T0, RequestCounter, add_hot, s3_setup, schedule

DAY = timedelta(days=1)

aws = archive_support.aws  # the moto S3 fixture


def build_archive(s3, settings, days=20):
    """`days` days of dispatch (hourly) and traffic (every 6 h) events, archived."""
    redis = fakeredis.FakeRedis()
    keys = Keys("t")
    dispatch = add_hot(redis, keys, "safety.dispatch", T0, days * 24, step=timedelta(hours=1))
    traffic = add_hot(
        redis,
        keys,
        "traffic.incident",
        T0,
        days * 4,
        step=timedelta(hours=6),
        department="sdot",
        recipients=("police",),
    )
    Archiver(redis, keys, s3, settings.bucket, schedule(), now=lambda: T0 + (days + 3) * DAY).run()
    return dispatch, traffic


@pytest.fixture(scope="module")
def archive():
    """Built once for the read-only tests of this module."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_ENDPOINT_URL", "CITYRELAY_S3_ENDPOINT", "CITYRELAY_S3_BUCKET"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        with mock_aws():
            settings, s3 = s3_setup()
            dispatch, traffic = build_archive(s3, settings)
            yield settings, s3, dispatch, traffic


def test_one_week_reads_only_that_weeks_partitions(archive):
    settings, s3, dispatch, _ = archive
    counter = RequestCounter(s3)
    start, end = T0 + 10 * DAY, T0 + 17 * DAY
    table = History(s3, settings.bucket).table(Query("safety.dispatch", start, end))
    assert table.num_rows == 7 * 24
    assert table.column("id").to_pylist() == [e["id"] for e in dispatch[10 * 24 : 17 * 24]]
    # 1 LIST of the type's index, 1 LIST of its class from the first date, 7 GETs (one per day).
    assert counter.calls == {"ListObjectsV2": 2, "GetObject": 7}


def test_time_bounds_are_event_times_start_inclusive_end_exclusive(archive):
    settings, s3, dispatch, _ = archive
    history = History(s3, settings.bucket)
    start = T0 + 5 * DAY + timedelta(hours=3)
    got = list(history.events(Query("safety.dispatch", start, start + timedelta(hours=2))))
    assert [e["time"] for e in got] == ["2026-03-15T03:00:00Z", "2026-03-15T04:00:00Z"]
    open_ended = History(s3, settings.bucket).table(Query("safety.dispatch", start=T0 + 19 * DAY))
    assert open_ended.num_rows == 24
    until = History(s3, settings.bucket).table(Query("safety.dispatch", end=T0 + DAY))
    assert until.num_rows == 24


def test_department_and_distance_filters(archive):
    settings, s3, dispatch, traffic = archive
    history = History(s3, settings.bucket)
    # Produced by sdot, or delivered to it: police received traffic events, spd produced dispatch.
    assert history.table(Query("traffic.incident", dept="sdot")).num_rows == len(traffic)
    assert history.table(Query("traffic.incident", dept="police")).num_rows == len(traffic)
    assert history.table(Query("traffic.incident", dept="parks")).num_rows == 0
    # Events are spread north along a meridian, 11.1 m apart; 105 m around the first catches 10.
    near = history.table(Query("safety.dispatch", T0, T0 + DAY, near=(47.60, -122.33, 105.0)))
    assert near.num_rows == 10
    assert near.column("id").to_pylist() == [e["id"] for e in dispatch[:10]]


def test_no_match_gives_an_empty_table(archive):
    settings, s3, _, _ = archive
    history = History(s3, settings.bucket)
    assert history.table(Query("safety.dispatch", T0 - 400 * DAY, T0 - 300 * DAY)).num_rows == 0
    assert history.table(Query("water.main_break")).num_rows == 0


def test_listing_pages_and_stray_files(aws):
    settings, s3 = s3_setup("pages-archive")
    build_archive(s3, settings, days=5)
    s3.put_object(
        Bucket=settings.bucket,
        Key="events/rc=dispatch-records/type=safety.dispatch/README",
        Body=b"x",
    )
    s3.put_object(
        Bucket=settings.bucket, Key="events/rc=old-class/type=safety.dispatch/README", Body=b"x"
    )
    history = History(s3, settings.bucket, page_size=2)
    assert history.table(Query("safety.dispatch")).num_rows == 5 * 24
    # Objects archived without index markers are still found, by listing every class.
    for item in s3.list_objects_v2(Bucket=settings.bucket, Prefix="index/")["Contents"]:
        s3.delete_object(Bucket=settings.bucket, Key=item["Key"])
    assert history._classes() == ["dispatch-records", "old-class", "traffic-studies"]
    assert history.table(Query("safety.dispatch")).num_rows == 5 * 24
    assert history.objects(Query("water.main_break")) == []
    assert History(s3, "cityrelay-archive-ledger").objects(Query("safety.dispatch")) == []


def test_archived_objects_must_be_restored_first(aws):
    settings, s3 = s3_setup("restore-archive")
    build_archive(s3, settings, days=3)
    # moto never runs lifecycle rules: simulate the transition with a copy.
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=settings.bucket, Prefix="events/rc=traffic")["Contents"]
    ]
    for key in keys[:2]:
        s3.copy_object(
            Bucket=settings.bucket,
            Key=key,
            CopySource={"Bucket": settings.bucket, "Key": key},
            StorageClass="DEEP_ARCHIVE",
            MetadataDirective="COPY",
        )
    history = History(s3, settings.bucket)
    query = Query("traffic.incident")
    with pytest.raises(RestoreRequired) as info:
        history.table(query)
    assert info.value.keys == keys[:2]
    assert "cityrelay history --restore" in str(info.value)
    assert (
        history.table(Query("traffic.incident", T0 + 2 * DAY)).num_rows == 4
    )  # not archived: fine
    assert history.request_restore(query) == keys[:2]
    assert history.table(query).num_rows == 12  # moto restores at once


def test_restore_in_progress_is_not_requested_twice(aws, monkeypatch):
    settings, s3 = s3_setup("ongoing-archive")
    build_archive(s3, settings, days=7)
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=settings.bucket, Prefix="events/rc=traffic")["Contents"]
    ]
    for key in keys:
        s3.copy_object(
            Bucket=settings.bucket,
            Key=key,
            CopySource={"Bucket": settings.bucket, "Key": key},
            StorageClass="GLACIER",
        )
    real_head = s3.head_object
    monkeypatch.setattr(
        s3,
        "head_object",
        lambda **kw: (
            {**real_head(**kw), "Restore": 'ongoing-request="true"'}
            if kw["Key"] == keys[0]
            else real_head(**kw)
        ),
    )
    history = History(s3, settings.bucket)
    assert history.request_restore(Query("traffic.incident")) == keys[1:]
    with pytest.raises(RestoreRequired, match="in progress for 1") as info:
        history.table(Query("traffic.incident"))
    assert info.value.in_progress == [keys[0]]
    assert "..." in str(RestoreRequired(keys, []))


def test_archive_is_a_standard_hive_parquet_lake_for_pyarrow_dataset(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        settings = lake.S3Settings(bucket="lake-archive", endpoint_url=f"http://127.0.0.1:{port}")
        s3 = settings.client()
        lake.ensure_buckets(s3, settings)
        dispatch, traffic = build_archive(s3, settings, days=3)
        fs = pafs.S3FileSystem(
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            endpoint_override=f"127.0.0.1:{port}",
            scheme="http",
        )
        dataset = ds.dataset(
            f"{settings.bucket}/events", filesystem=fs, format="parquet", partitioning="hive"
        )
        table = dataset.to_table(
            filter=(ds.field("type") == "safety.dispatch") & (ds.field("dt") == "2026-03-11")
        )
        assert table.num_rows == 24
        assert set(table.column("rc").to_pylist()) == {"dispatch-records"}
        assert dataset.count_rows() == len(dispatch) + len(traffic)
    finally:
        server.stop()


def test_output_formats_and_argument_parsing():
    events = [
        {"id": "a", "type": "x.y", "location": {"lat": 1.0, "lon": 2.0}},
        {
            "id": "b",
            "type": "x.y",
            "location": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]},
        },
        {"id": "c", "type": "x.y"},
    ]
    fc = to_geojson(iter(events))
    assert [f["geometry"] for f in fc["features"]] == [
        {"type": "Point", "coordinates": [2.0, 1.0]},
        events[1]["location"],
        None,
    ]
    out = io.StringIO()
    assert write_jsonl(iter(events), out) == 3
    assert [json.loads(line) for line in out.getvalue().splitlines()] == events
    assert parse_when("2024-03-01") == datetime(2024, 3, 1, tzinfo=UTC)
    assert parse_when("2024-03-01T10:00:00Z") == datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert parse_near("47.6,-122.3,250") == (47.6, -122.3, 250.0)
    with pytest.raises(ValueError, match="lat,lon,metres"):
        parse_near("47.6,-122.3")
    assert month_bounds(date(2024, 12, 5)) == (
        datetime(2024, 12, 1, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert haversine_m(pa.array([0.0]), pa.array([0.0]), 0.0, 1.0)[0] == pytest.approx(
        111_195, rel=1e-3
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": datetime(2024, 1, 1)}, "timezone"),
        (
            {"start": datetime(2024, 1, 2, tzinfo=UTC), "end": datetime(2024, 1, 1, tzinfo=UTC)},
            "after start",
        ),
        ({"near": (95.0, 0.0, 10.0)}, "positive radius"),
        ({"near": (45.0, 0.0, 0.0)}, "positive radius"),
    ],
)
def test_bad_queries_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Query("x.y", **kwargs)
