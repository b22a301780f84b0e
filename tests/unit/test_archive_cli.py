"""The archive commands an operator or records officer runs, and the scheduled jobs."""

from __future__ import annotations

import json
import zlib
from datetime import timedelta

import fakeredis
import pyarrow.parquet as pq
import pytest
import yaml
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.serializers import JSONSerializer

from city.retention import EXAMPLE_RETENTION
from jobs.archive import archive_job, job_redis, load_schedule
from jobs.archive import job as archive_job_module
from jobs.disposition import disposition_job
from jobs.schedule import archive_queue_name, build_scheduler
from queues import hot
from queues.keys import Keys
from tests.unit import archive_support
from tests.unit.archive_support import T0, add_hot, s3_setup
from workers import cli
from workers.runtime import Runtime

DAY = timedelta(days=1)

aws = archive_support.aws  # the moto S3 fixture


@pytest.fixture
def city(aws, tmp_path, monkeypatch):
    """A city YAML with the example retention schedule, a fakeredis, the S3 buckets."""
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump({"city": "Testville", "retention": EXAMPLE_RETENTION}))
    monkeypatch.setenv("CITYRELAY_CONFIG", str(path))
    redis = fakeredis.FakeRedis()
    monkeypatch.setattr(Runtime, "redis", lambda self, **kw: redis)
    settings, s3 = s3_setup()
    return redis, s3, settings


def run(capsys, *argv):
    code = cli.main(["--prefix", "t", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_archive_run_status_and_history_from_the_command_line(city, capsys, tmp_path):
    redis, s3, settings = city
    keys = Keys("t")
    # Routed in March 2026: by the Redis clock (the archive's "now") long past the hot window.
    add_hot(redis, keys, "safety.dispatch", T0, 48, step=timedelta(hours=1), department="spd")
    code, out, _ = run(capsys, "archive", "run")
    assert code == 0 and json.loads(out)["rows"] == 48
    code, out, _ = run(
        capsys, "history", "--type", "safety.dispatch", "--from", "2026-03-11", "--to", "2026-03-12"
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 24 and lines[0]["time"] == "2026-03-11T00:00:00Z"
    code, out, _ = run(
        capsys,
        "history",
        "--type",
        "safety.dispatch",
        "--near",
        "47.6,-122.33,50",
        "--format",
        "geojson",
    )
    assert [f["geometry"]["type"] for f in json.loads(out)["features"]] == [
        "Point"
    ] * 5  # 11.1 m apart
    target = tmp_path / "slice.parquet"
    assert (
        run(
            capsys, "history", "--type", "safety.dispatch", "--format", "parquet", "-o", str(target)
        )[0]
        == 0
    )
    assert pq.read_table(target).num_rows == 48
    jsonl = tmp_path / "slice.jsonl"
    assert (
        run(capsys, "history", "--type", "safety.dispatch", "--dept", "spd", "-o", str(jsonl))[0]
        == 0
    )
    assert len(jsonl.read_text().splitlines()) == 48
    code, _, err = run(capsys, "history", "--type", "safety.dispatch", "--format", "parquet")
    assert code == 2 and "needs --output" in err
    code, _, err = run(capsys, "history", "--type", "safety.dispatch", "--near", "1,2")
    assert code == 2 and "lat,lon,metres" in err


def test_history_says_what_must_be_restored_and_requests_it(city, capsys):
    redis, s3, settings = city
    add_hot(redis, Keys("t"), "traffic.incident", T0, 4)
    run(capsys, "archive", "run")
    key = s3.list_objects_v2(Bucket=settings.bucket, Prefix="events/")["Contents"][0]["Key"]
    s3.copy_object(
        Bucket=settings.bucket,
        Key=key,
        CopySource={"Bucket": settings.bucket, "Key": key},
        StorageClass="GLACIER",
    )
    code, _, err = run(capsys, "history", "--type", "traffic.incident")
    assert code == 3 and "must be restored" in err
    code, _, err = run(capsys, "history", "--type", "traffic.incident", "--restore")
    assert code == 0 and "restore requested for 1 object" in err
    assert run(capsys, "history", "--type", "traffic.incident")[0] == 0


def test_lifecycle_holds_and_dispose_commands(city, capsys):
    redis, s3, settings = city
    code, out, _ = run(capsys, "archive", "lifecycle")
    printed = json.loads(out)
    assert code == 0 and {r["ID"] for r in printed["Rules"]} >= {"rc-dispatch-records"}
    code, out, _ = run(capsys, "archive", "lifecycle", "--apply")
    stored = s3.get_bucket_lifecycle_configuration(Bucket=settings.bucket)["Rules"]
    assert {r["ID"] for r in stored} == {r["ID"] for r in printed["Rules"]}
    assert run(capsys, "archive", "init")[1].startswith("buckets ready")
    code, out, _ = run(
        capsys,
        "archive",
        "holds",
        "add",
        "case-9",
        "--kind",
        "litigation",
        "--reason",
        "Roe v. City",
        "--by",
        "legal",
        "--series",
        "vehicle-telemetry",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-31",
    )
    assert code == 0 and "placed" in out
    code, out, _ = run(capsys, "archive", "holds", "list")
    assert json.loads(out)["id"] == "case-9"
    add_hot(redis, Keys("t"), "transit.vehicle_position", T0, 10)
    run(capsys, "archive", "run")
    code, out, _ = run(capsys, "archive", "dispose", "--now", "2026-06-01")
    assert json.loads(out)["held"][0]["holds"] == ["case-9"]
    assert run(capsys, "archive", "holds", "remove", "case-9")[0] == 0
    code, _, err = run(capsys, "archive", "holds", "remove", "case-9")
    assert code == 1 and "no hold" in err
    code, out, _ = run(capsys, "archive", "dispose", "--dry-run", "--now", "2026-06-01")
    assert json.loads(out)["records"] == 1
    code, out, _ = run(capsys, "archive", "dispose", "--now", "2026-06-01")
    assert json.loads(out)["objects"] == 1


def test_the_schedule_comes_from_the_city_yaml(tmp_path, monkeypatch):
    monkeypatch.delenv("CITYRELAY_CONFIG", raising=False)
    with pytest.raises(RuntimeError, match="no city config"):
        load_schedule()
    path = tmp_path / "city.yaml"
    path.write_text("city: Testville\n")
    with pytest.raises(RuntimeError, match="no retention: section"):
        load_schedule(path)


def test_scheduler_enqueues_json_jobs_that_a_worker_runs(city, monkeypatch):
    redis, s3, settings = city
    keys = Keys("t")
    add_hot(redis, keys, "transit.vehicle_position", T0, 30)
    scheduler = build_scheduler(redis, keys, archive_every_s=60, dispose_cron="0 3 * * *")
    jobs = {j.name: j for j in scheduler.get_jobs()}
    assert set(jobs) == {"t:archive", "t:disposition"}
    assert jobs["t:archive"].interval == 60 and jobs["t:disposition"].cron == "0 3 * * *"
    assert {j.queue_name for j in jobs.values()} == {"t.archive"} == {archive_queue_name(keys)}
    enqueued = scheduler.enqueue_jobs()  # interval jobs run at once; the cron one waits for 03:00
    assert [j.name for j in enqueued] == ["t:archive"]
    queue = Queue("t.archive", connection=redis, serializer=JSONSerializer)
    (job_id,) = queue.job_ids
    raw = redis.hget(f"rq:job:{job_id}", "data")
    assert json.loads(zlib.decompress(raw))[0] == "jobs.archive.job.archive_job"  # JSON, not pickle
    jobs["t:disposition"].enqueue(redis)
    worker = SimpleWorker([queue], connection=redis, serializer=JSONSerializer)
    assert worker.work(burst=True)
    results = [queue.fetch_job(i).return_value() for i in queue.finished_job_registry.get_job_ids()]
    summaries = {("trimmed" in r): r for r in results}
    assert summaries[True]["rows"] == 30  # archive_job, on the job's own connection
    assert redis.xlen(keys.hot("transit.vehicle_position")) == 0
    # By the real clock, March's vehicle positions are past their 30 days: destroyed, recorded.
    assert summaries[False]["records"] == 1 and summaries[False]["rows"] == 30


def test_only_one_scheduler_holds_the_lease(city):
    redis, _, _ = city
    keys = Keys("t")
    first = build_scheduler(redis, keys)
    second = build_scheduler(redis, keys)
    assert first.try_lease() and first.try_lease()  # renewal
    assert not second.try_lease()
    assert not second.wait_for_lease(poll_s=0.01, max_wait_s=0.02)
    with pytest.raises(StopRequested):
        second.heartbeat()
    first.heartbeat()
    second.release_lease()  # not its lease: no effect
    assert redis.get(keys.scheduler_lease).decode() == first.token
    first.release_lease()
    assert second.wait_for_lease(poll_s=0.01)


def test_jobs_run_outside_a_worker_with_redis_url(city, monkeypatch):
    redis, _, _ = city
    monkeypatch.setattr(archive_job_module, "job_redis", lambda: redis)
    assert job_redis().connection_pool is not None  # not inside a job: $REDIS_URL client
    add_hot(redis, Keys("u"), "iot.heartbeat", T0, 3)
    assert archive_job("u")["trimmed"] == 3
    lock = redis.lock(Keys("u").disposition_lock, timeout=60)
    assert lock.acquire(blocking=False)
    assert disposition_job("u") == {"skipped": "another disposition run holds the lock"}
    lock.release()
    assert disposition_job("u")["records"] == 0


def test_hot_tier_window_reading_and_trimming(city):
    # hot_report needs MEMORY USAGE (not in fakeredis): tests/integration/test_archive_redis.py
    redis, _, _ = city
    keys = Keys("h")
    add_hot(redis, keys, "a.b", T0, 7)
    start = int(T0.timestamp() * 1000)
    entries = list(hot.read_window(redis, keys, "a.b", start, start + 5 * 60_000, chunk=2))
    assert (
        len(entries) == 5 and entries[0].routed_ms == start and entries[0].recipients == "fire,spd"
    )
    assert hot.entry_ms(b"5-1") == 5
    assert hot.oldest_ms(redis, keys, "x.y") is None
    # Another field order (written by hand, not by hot_append) is read field by field.
    redis.xadd(keys.hot("other.order"), {"ing": "9-0", "to": "parks", "e": "{}"}, id="5-0")
    (entry,) = hot.read_window(redis, keys, "other.order", 0, 2**62)
    assert (entry.entry_id, entry.recipients, entry.ingest_id) == ("5-0", "parks", "9-0")
    redis.xadd(keys.hot("bad.entry"), {"e": "{}"})
    with pytest.raises(ValueError, match="no 'to' field"):
        list(hot.read_window(redis, keys, "bad.entry", 0, 2**62))
    assert hot.trim_ids(redis, keys, "a.b", [e.entry_id for e in entries]) == 5
    assert redis.xlen(keys.hot("a.b")) == 2
