"""Disposition: what has passed its retention and is not on legal hold leaves the archive.

For each series with a finite retention, every archive object whose partition date has passed
`Series.retain_until` is destroyed, anonymised (payload fields removed, then kept) or
transferred (copied to ``transfer_to``, then deleted), unless a legal hold covers it. Each
action is written as a disposition record (series, date range, object keys, row count, hash of
the disposed objects, authority) to a hash-chained log in an Object-Locked ledger bucket: each
record names the hash of the one before, so a missing or altered record breaks the chain.

Holds live next to the archive (``control/holds/<id>.json``), so they survive any Redis loss.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
from botocore.exceptions import ClientError
from redis import Redis

from city.config import PartitionsConfig
from city.retention import RESTORE_CLASSES, Hold, RetentionSchedule, Series, blocking_holds
from jobs import lake
from queues.connect import redis_from_url
from queues.keys import Keys
from queues.partition import group_keys, shard_of, shard_url

GENESIS = "0" * 64
LEDGER_PREFIX = "disposition/"
LEDGER_LOCK_YEARS = 100
DISPOSED_MARK = "disposition"
RESTORE_FIRST = "stored in GLACIER/DEEP_ARCHIVE: restore it first (cityrelay history --restore)"


class HoldStore:
    """Legal holds stored in the archive bucket as JSON documents."""

    def __init__(self, s3: Any, bucket: str):
        self.s3 = s3
        self.bucket = bucket

    def add(self, hold: Hold) -> None:
        body = hold.model_dump_json().encode()
        self.s3.put_object(Bucket=self.bucket, Key=f"{lake.HOLDS_PREFIX}{hold.id}.json", Body=body)

    def remove(self, hold_id: str) -> bool:
        key = f"{lake.HOLDS_PREFIX}{hold_id}.json"
        if not any(h.id == hold_id for h in self.list()):
            return False
        self.s3.delete_object(Bucket=self.bucket, Key=key)
        return True

    def list(self) -> list[Hold]:
        holds = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=lake.HOLDS_PREFIX):
            for item in page.get("Contents", []):
                body = self.s3.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                holds.append(Hold.model_validate_json(body))
        return sorted(holds, key=lambda h: h.placed_at)


@dataclass
class DispositionReport:
    records: list[dict[str, Any]] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "records": len(self.records),
            "objects": sum(len(r["keys"]) for r in self.records),
            "rows": sum(r["count"] for r in self.records),
            "held": self.held,
        }


class Disposer:
    """Runs the schedule's end-of-retention actions and keeps the disposition log."""

    def __init__(
        self,
        s3: Any,
        settings: lake.S3Settings,
        schedule: RetentionSchedule,
        authority: str = "schedule",
    ):
        self.s3 = s3
        self.bucket = settings.bucket
        self.ledger = Ledger(s3, settings.ledger_bucket)
        self.schedule = schedule
        self.authority = authority
        self.holds = HoldStore(s3, settings.bucket)

    def due(self, series: Series, now: datetime) -> list[tuple[lake.KeyParts, str]]:
        """Objects of `series` past retention (already-anonymised ones excluded)."""
        kind = lake.AGGREGATES if series.end_of_hot == "aggregate" else lake.EVENTS
        out = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{kind}/rc={series.id}/"):
            for item in page.get("Contents", []):
                parts = lake.parse_key(item["Key"])
                if parts is None:
                    continue
                until = series.retain_until(parts.day)
                if until is not None and until <= now:
                    out.append((parts, item["Key"]))
        return out

    def run(self, now: datetime | None = None, dry_run: bool = False) -> DispositionReport:
        now = now or datetime.now(UTC)
        report = DispositionReport()
        holds = self.holds.list()
        for series in self.schedule.series:
            if series.permanent or series.end_of_hot == "drop":
                continue
            groups: dict[str, list[tuple[lake.KeyParts, str]]] = {}
            for parts, key in self.due(series, now):
                if series.disposition == "anonymise" and self._anonymised(key):
                    continue
                blocking = blocking_holds(holds, series.id, parts.event_type, parts.day)
                if blocking:
                    report.held.append({"key": key, "holds": [h.id for h in blocking]})
                    continue
                groups.setdefault(parts.event_type, []).append((parts, key))
            for event_type, items in sorted(groups.items()):
                ready, counts, digest, archived = self._prepare(series, items)
                report.held.extend(
                    {"key": k, "holds": [], "reason": RESTORE_FIRST} for k in archived
                )
                if not ready:
                    continue
                record = self._record(
                    series, event_type, [(p, k) for p, k, _ in ready], counts, digest
                )
                if dry_run:
                    report.records.append(record)
                    continue
                # The record is written first: nothing is ever disposed of without one.
                report.records.append(self.ledger.append(record, now))
                self._act(series, ready)
        return report

    def _record(
        self,
        series: Series,
        event_type: str,
        items: list[tuple[lake.KeyParts, str]],
        counts: list[int],
        digest: str,
    ) -> dict[str, Any]:
        days = [p.day for p, _ in items]
        return {
            "series": series.id,
            "type": event_type,
            "action": series.disposition,
            "range": [min(days).isoformat(), max(days).isoformat()],
            "keys": [k for _, k in items],
            "count": sum(counts),
            "hash": digest,
            "authority": series.authority or self.authority,
            "transfer_to": series.transfer_to if series.disposition == "transfer" else None,
        }

    def _anonymised(self, key: str) -> bool:
        head = self.s3.head_object(Bucket=self.bucket, Key=key)
        return head.get("Metadata", {}).get(DISPOSED_MARK) == "anonymised"

    def _prepare(
        self, series: Series, items: list[tuple[lake.KeyParts, str]]
    ) -> tuple[list[tuple[lake.KeyParts, str, bytes | None]], list[int], str, list[str]]:
        """Read what will be disposed of: row counts and a hash over (key, SHA-256 of bytes).

        Objects in GLACIER / DEEP_ARCHIVE are not readable: to destroy them S3's stored
        checksum and our row-count metadata suffice; anonymising or transferring them needs a
        restore first, so they are left for a later run and reported.
        """
        digest = hashlib.sha256()
        ready: list[tuple[lake.KeyParts, str, bytes | None]] = []
        counts: list[int] = []
        archived: list[str] = []
        for parts, key in items:
            head = self.s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
            body: bytes | None = None
            if head.get("StorageClass", "STANDARD") in RESTORE_CLASSES:
                if series.disposition != "destroy" and 'ongoing-request="false"' not in head.get(
                    "Restore", ""
                ):
                    archived.append(key)
                    continue
                sha = base64.b64decode(head.get("ChecksumSHA256", ""))
                rows = int(head.get("Metadata", {}).get("rows", 0))
                if series.disposition != "destroy":
                    body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            else:
                body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                sha, rows = hashlib.sha256(body).digest(), lake.parquet_rows(body)
            digest.update(key.encode() + b"\0" + sha)
            counts.append(rows)
            ready.append((parts, key, body))
        return ready, counts, digest.hexdigest(), archived

    def _act(self, series: Series, ready: list[tuple[lake.KeyParts, str, bytes | None]]) -> None:
        for _, key, body in ready:
            if series.disposition == "transfer":
                assert body is not None
                self._transfer(series, key, body)
            if series.disposition == "anonymise":
                assert body is not None
                self._anonymise(series, key, body)
            else:
                self._delete_all_versions(key)

    def _transfer(self, series: Series, key: str, body: bytes) -> None:
        target = (series.transfer_to or "")[len("s3://") :]
        bucket, _, prefix = target.partition("/")
        dest = f"{prefix.rstrip('/')}/{key}" if prefix else key
        self.s3.put_object(
            Bucket=bucket,
            Key=dest,
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=lake.sha256_b64(body),
        )

    def _anonymise(self, series: Series, key: str, body: bytes) -> None:
        table = lake.read_parquet(body)
        if "event_json" in table.column_names:  # aggregates hold no payloads
            drop = set(series.anonymise_fields)
            cleaned = []
            for text in table.column("event_json").to_pylist():
                event = json.loads(text)
                if isinstance(event.get("data"), dict):
                    event["data"] = {k: v for k, v in event["data"].items() if k not in drop}
                cleaned.append(json.dumps(event, separators=(",", ":")))
            index = table.column_names.index("event_json")
            table = table.set_column(index, "event_json", pa.array(cleaned, pa.string()))
        new = lake.parquet_bytes(table)
        old_versions = self._versions(key)
        self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=new,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=lake.sha256_b64(new),
            Metadata={
                "rows": str(table.num_rows),
                "sha256": lake.sha256_b64(new),
                DISPOSED_MARK: "anonymised",
            },
        )
        for version in old_versions:
            self.s3.delete_object(Bucket=self.bucket, Key=key, VersionId=version)

    def _versions(self, key: str) -> list[str]:
        versions = []
        paginator = self.s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
            for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                if v["Key"] == key:
                    versions.append(v["VersionId"])
        return versions

    def _delete_all_versions(self, key: str) -> None:
        for version in self._versions(key):
            self.s3.delete_object(Bucket=self.bucket, Key=key, VersionId=version)


class Ledger:
    """The hash-chained disposition log: ``disposition/<seq>.json`` under COMPLIANCE lock."""

    def __init__(self, s3: Any, bucket: str):
        self.s3 = s3
        self.bucket = bucket

    def records(self) -> list[dict[str, Any]]:
        out = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=LEDGER_PREFIX):
            for item in page.get("Contents", []):
                body = self.s3.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                out.append(json.loads(body))
        return out

    def _last(self) -> tuple[int, str]:
        last_key = None
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=LEDGER_PREFIX):
            for item in page.get("Contents", []):
                last_key = item["Key"]
        if last_key is None:
            return 0, GENESIS
        record = json.loads(self.s3.get_object(Bucket=self.bucket, Key=last_key)["Body"].read())
        return int(record["seq"]), str(record["record_hash"])

    def append(self, record: dict[str, Any], now: datetime) -> dict[str, Any]:
        seq, prev = self._last()
        entry = {"seq": seq + 1, "at": now.isoformat(), **record, "prev_hash": prev}
        entry["record_hash"] = record_hash(entry)
        body = json.dumps(entry, sort_keys=True).encode()
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=f"{LEDGER_PREFIX}{seq + 1:012d}.json",
                Body=body,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=lake.sha256_b64(body),
                ObjectLockMode="COMPLIANCE",
                ObjectLockRetainUntilDate=now + timedelta(days=365 * LEDGER_LOCK_YEARS),
            )
        except ClientError as exc:
            raise RuntimeError(
                f"cannot write disposition record to s3://{self.bucket}: {exc}"
            ) from exc
        return entry

    def verify(self) -> list[str]:
        """Problems in the chain (empty when every record links to the one before)."""
        problems = []
        prev = GENESIS
        for n, entry in enumerate(self.records(), start=1):
            if entry.get("seq") != n:
                problems.append(f"record {n}: sequence is {entry.get('seq')}")
            if entry.get("prev_hash") != prev:
                problems.append(f"record {n}: prev_hash does not match record {n - 1}")
            if record_hash(entry) != entry.get("record_hash"):
                problems.append(f"record {n}: content does not match its hash")
            prev = str(entry.get("record_hash"))
        return problems


def record_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "record_hash"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def disposition_job(prefix: str) -> dict[str, Any]:
    """RQ entry point: one disposition run under the city's disposition lock."""
    from jobs.archive.job import job_redis, load_partitions, load_schedule

    own = job_redis()
    redis, keys = city_lock_home(own, prefix, load_partitions())
    try:
        lock = redis.lock(keys.disposition_lock, timeout=3600)
        if not lock.acquire(blocking=False):
            return {"skipped": "another disposition run holds the lock"}
        try:
            settings = lake.S3Settings.from_env()
            return Disposer(settings.client(), settings, load_schedule()).run().summary()
        finally:
            lock.release()
    finally:
        if redis is not own:  # the control shard's client, made for the lock
            redis.close()


def city_lock_home(redis: Redis, prefix: str, parts: PartitionsConfig | None) -> tuple[Redis, Keys]:
    """Where the disposition lock is taken: one place for the whole city. Every shard's
    scheduler enqueues disposition (at the same hour), and the shards of a partitioned city
    share one bucket and its ledger: runs that overlapped would each list the same due objects
    and append to the one hash chain at once. So a partitioned city's lock lives on the control
    shard (slot groups: under the control group's prefix, on the same cluster; URL shards: on
    the control shard's Redis), and a run that waited finds what the first disposed of gone."""
    if parts is None:
        return redis, Keys(prefix)
    if parts.slot_groups:
        return redis, group_keys(parts)[parts.control_shard]
    if shard_of(parts, prefix=prefix) == parts.control_shard:
        return redis, Keys(prefix)
    return redis_from_url(shard_url(parts, parts.control_shard)), Keys(prefix)


def parse_day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None
