"""Disposition: retention ends, holds block, every action leaves a hash-chained record."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import fakeredis
import pytest
from botocore.exceptions import ClientError

from city.retention import Hold
from jobs.archive import Archiver
from jobs.disposition import RESTORE_FIRST, Disposer, HoldStore, Ledger, parse_day
from jobs.retrieval import History, Query
from queues.keys import Keys
from tests.unit import archive_support
from tests.unit.archive_support import T0, add_hot, all_rows, s3_setup, schedule

DAY = timedelta(days=1)
PLACED = datetime(2026, 4, 1, tzinfo=UTC)

aws = archive_support.aws  # the moto S3 fixture


def archive(s3, settings, sched, *types_counts, days=3):
    redis = fakeredis.FakeRedis()
    keys = Keys("t")
    sent = {}
    for event_type, per_day in types_counts:
        sent[event_type] = add_hot(redis, keys, event_type, T0, days * per_day, step=DAY / per_day)
    Archiver(redis, keys, s3, settings.bucket, sched, now=lambda: T0 + (days + 2) * DAY).run()
    return sent


def keys_under(s3, bucket, prefix):
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def test_destroy_after_retention_with_a_chained_record(aws):
    settings, s3 = s3_setup()
    sched = schedule()
    archive(s3, settings, sched, ("transit.vehicle_position", 10), ("safety.dispatch", 4))
    disposer = Disposer(s3, settings, sched)
    # Day 0's vehicle positions are 30 days old at the start of day 31.
    assert disposer.run(T0 + 30 * DAY).records == []
    report = disposer.run(T0 + 31 * DAY + timedelta(hours=1))
    assert [r["range"] for r in report.records] == [["2026-03-10", "2026-03-10"]]
    record = report.records[0]
    assert record["series"] == "vehicle-telemetry"
    assert record["action"] == "destroy"
    assert record["count"] == 10
    assert record["authority"].startswith("GS 2016-010")
    assert record["keys"] == [
        "events/rc=vehicle-telemetry/type=transit.vehicle_position/dt=2026-03-10/part-20260310T000000Z.parquet"
    ]
    # Gone, every version; the other days and the 3-year dispatch records stay.
    versions = s3.list_object_versions(Bucket=settings.bucket, Prefix=record["keys"][0]).get(
        "Versions", []
    )
    assert versions == []
    assert len(keys_under(s3, settings.bucket, "events/rc=vehicle-telemetry/")) == 2
    assert len(keys_under(s3, settings.bucket, "events/rc=dispatch-records/")) == 3
    later = disposer.run(T0 + 40 * DAY)
    assert later.summary()["objects"] == 2
    ledger = Ledger(s3, settings.ledger_bucket)
    entries = ledger.records()
    assert [e["seq"] for e in entries] == [1, 2]
    assert entries[1]["prev_hash"] == entries[0]["record_hash"]
    assert ledger.verify() == []
    # The log itself is locked: no one rewrites history.
    head = s3.head_object(Bucket=settings.ledger_bucket, Key="disposition/000000000001.json")
    assert head["ObjectLockMode"] == "COMPLIANCE"


def test_a_tampered_ledger_fails_verification(aws):
    settings, s3 = s3_setup()
    sched = schedule()
    archive(s3, settings, sched, ("transit.vehicle_position", 2))
    Disposer(s3, settings, sched).run(T0 + 60 * DAY)
    ledger = Ledger(s3, settings.ledger_bucket)
    entry = ledger.records()[0]
    entry["count"] = 0
    entry["seq"] = 5
    entry["prev_hash"] = "f" * 64
    # A new version can be written beside the locked one (the old one stays): verification sees it.
    s3.put_object(
        Bucket=settings.ledger_bucket,
        Key="disposition/000000000001.json",
        Body=json.dumps(entry).encode(),
    )
    problems = ledger.verify()
    assert len(problems) == 3


def test_a_legal_hold_blocks_disposition_until_removed(aws):
    settings, s3 = s3_setup()
    sched = schedule()
    archive(s3, settings, sched, ("transit.vehicle_position", 5))
    holds = HoldStore(s3, settings.bucket)
    holds.add(
        Hold(
            id="case-42",
            kind="litigation",
            reason="Doe v. City",
            placed_by="city attorney",
            placed_at=PLACED,
            series="vehicle-telemetry",
            start=date(2026, 3, 11),
            end=date(2026, 3, 11),
        )
    )
    holds.add(
        Hold(
            id="prr-7",
            kind="public_records",
            reason="PRR 2026-7",
            placed_by="clerk",
            placed_at=PLACED + DAY,
            types=["transit.*"],
            start=date(2026, 3, 12),
        )
    )
    assert [h.id for h in holds.list()] == ["case-42", "prr-7"]
    disposer = Disposer(s3, settings, schedule())
    report = disposer.run(T0 + 60 * DAY)
    assert report.summary()["objects"] == 1  # only 2026-03-10 was free
    assert sorted(h["holds"][0] for h in report.held) == ["case-42", "prr-7"]
    assert len(keys_under(s3, settings.bucket, "events/rc=vehicle-telemetry/")) == 2
    assert holds.remove("case-42")
    assert not holds.remove("case-42")
    report = disposer.run(T0 + 60 * DAY)
    assert [r["range"] for r in report.records] == [["2026-03-11", "2026-03-11"]]
    assert len(keys_under(s3, settings.bucket, "events/rc=vehicle-telemetry/")) == 1


def test_locked_records_cannot_be_deleted_before_retention_ends(aws):
    settings, s3 = s3_setup()
    # moto checks locks against the wall clock: keep the retention end in the real future.
    sched = schedule(**{"dispatch-records": {"personal_data": False, "retain": "5y"}})
    archive(s3, settings, sched, ("safety.dispatch", 4))
    key = keys_under(s3, settings.bucket, "events/rc=dispatch-records/")[0]
    assert s3.head_object(Bucket=settings.bucket, Key=key)["ObjectLockMode"] == "COMPLIANCE"
    # Disposition leaves it alone before retention ends, and S3 refuses anyone who tries.
    assert Disposer(s3, settings, sched).run(T0 + 4 * 365 * DAY).records == []
    disposer = Disposer(s3, settings, sched)
    with pytest.raises(ClientError, match="AccessDenied"):
        disposer._delete_all_versions(key)
    assert key in keys_under(s3, settings.bucket, "events/rc=dispatch-records/")


def test_anonymise_removes_personal_fields_and_keeps_the_rest(aws):
    settings, s3 = s3_setup()
    sched = schedule(**{"traffic-studies": {"retain": "30d"}})
    redis = fakeredis.FakeRedis()
    add_hot(redis, Keys("t"), "traffic.incident", T0 + timedelta(hours=23), 1, data=None)
    Archiver(redis, Keys("t"), s3, settings.bucket, sched, now=lambda: T0 + 5 * DAY).run()
    sent = archive(s3, settings, sched, ("traffic.incident", 4))["traffic.incident"]
    disposer = Disposer(s3, settings, sched)
    report = disposer.run(T0 + 60 * DAY)
    assert report.records[0]["action"] == "anonymise"
    assert report.records[0]["count"] == 13
    kept = list(History(s3, settings.bucket).events(Query("traffic.incident")))
    assert len(kept) == 13
    assert "data" not in kept[4]  # the event without a payload stays without one
    del kept[4]
    assert all("plate" not in e["data"] for e in kept)
    assert [e["data"]["n"] for e in kept] == [e["data"]["n"] for e in sent]
    # The originals (every version) are gone; a second run does not anonymise again.
    versions = s3.list_object_versions(Bucket=settings.bucket, Prefix="events/rc=traffic-studies/")[
        "Versions"
    ]
    assert len(versions) == 3
    assert disposer.run(T0 + 61 * DAY).records == []


def test_transfer_copies_to_the_archives_then_deletes(aws):
    settings, s3 = s3_setup()
    s3.create_bucket(Bucket="state-archives")
    sched = schedule(
        **{
            "utility-billing": {
                "end_of_hot": "archive",
                "disposition": "transfer",
                "transfer_to": "s3://state-archives/seattle",
                "retain": "1y",
                "trigger": "event",
            }
        }
    )
    sent = archive(s3, settings, sched, ("utility.meter_alarm", 2), days=1)["utility.meter_alarm"]
    report = Disposer(s3, settings, sched).run(T0 + 400 * DAY)
    assert report.records[0]["transfer_to"] == "s3://state-archives/seattle"
    moved = keys_under(s3, "state-archives", "seattle/events/")
    assert len(moved) == 1
    assert sorted(all_rows(s3, "state-archives", "seattle/")) == sorted(e["id"] for e in sent)
    assert keys_under(s3, settings.bucket, "events/") == []


def test_transfer_to_a_bucket_root_and_aggregates_are_disposed_too(aws):
    settings, s3 = s3_setup()
    s3.create_bucket(Bucket="state-archives")
    sched = schedule(
        **{
            "air-quality-counts": {
                "retain": "1y",
                "disposition": "transfer",
                "transfer_to": "s3://state-archives",
            }
        }
    )
    archive(s3, settings, sched, ("environment.air_quality", 24), days=1)
    s3.put_object(
        Bucket=settings.bucket, Key="aggregates/rc=air-quality-counts/notes.txt", Body=b"x"
    )
    report = Disposer(s3, settings, sched).run(T0 + 400 * DAY)
    assert report.records[0]["keys"][0].startswith("aggregates/rc=air-quality-counts/")
    assert len(keys_under(s3, "state-archives", "aggregates/")) == 1


def test_dry_run_and_permanent_series(aws):
    settings, s3 = s3_setup()
    sched = schedule()
    archive(s3, settings, sched, ("transit.vehicle_position", 2), ("health.emergency", 2))
    dry = Disposer(s3, settings, sched).run(T0 + 100 * 365 * DAY, dry_run=True)
    assert [r["series"] for r in dry.records] == ["vehicle-telemetry"]  # permanent: never
    assert len(keys_under(s3, settings.bucket, "events/rc=vehicle-telemetry/")) == 3
    assert Ledger(s3, settings.ledger_bucket).records() == []


def test_a_ledger_bucket_without_object_lock_is_refused(aws):
    settings, s3 = s3_setup()
    s3.create_bucket(Bucket="plain-ledger")
    ledger = Ledger(s3, "plain-ledger")
    with pytest.raises(RuntimeError, match="cannot write disposition record"):
        ledger.append({"series": "x"}, PLACED)
    assert parse_day("2026-01-02") == date(2026, 1, 2)
    assert parse_day(None) is None


def test_archived_storage_classes_destroy_from_metadata_but_anonymise_after_restore(aws):
    settings, s3 = s3_setup()
    sched = schedule(**{"traffic-studies": {"retain": "30d"}})
    archive(s3, settings, sched, ("transit.vehicle_position", 3), ("traffic.incident", 2), days=1)
    bucket = settings.bucket
    vehicle = keys_under(s3, bucket, "events/rc=vehicle-telemetry/")[0]
    traffic = keys_under(s3, bucket, "events/rc=traffic-studies/")[0]
    for key, storage_class in ((vehicle, "DEEP_ARCHIVE"), (traffic, "GLACIER")):
        # moto never runs lifecycle rules: simulate the transitions.
        s3.copy_object(
            Bucket=bucket,
            Key=key,
            CopySource={"Bucket": bucket, "Key": key},
            StorageClass=storage_class,
            MetadataDirective="COPY",
        )
    disposer = Disposer(s3, settings, sched)
    report = disposer.run(T0 + 60 * DAY)
    assert [(r["series"], r["count"]) for r in report.records] == [("vehicle-telemetry", 3)]
    assert keys_under(s3, bucket, "events/rc=vehicle-telemetry/") == []
    assert report.held == [{"key": traffic, "holds": [], "reason": RESTORE_FIRST}]
    s3.restore_object(Bucket=bucket, Key=traffic, RestoreRequest={"Days": 1})
    report = disposer.run(T0 + 60 * DAY)
    assert [(r["action"], r["count"]) for r in report.records] == [("anonymise", 2)]
