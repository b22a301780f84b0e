"""The archiver: hot tier (Redis) -> cold tier (S3), under the retention schedule.

For each hot type and each archive window that lies wholly past the series' hot window:

1. take the window's lock (``Keys.archive_lock``): a double run skips a window in progress;
2. read the window (XRANGE by routing time) and act on ``end_of_hot``: ``drop`` keeps
   nothing, ``aggregate`` writes hourly counts per H3 cell, ``archive``/``record`` write the
   full events, one Parquet object per event date, at a key fixed by (series, type, date,
   window, shard), with the storage class for its age and, for ``record``, Object Lock until
   the end of retention (GOVERNANCE when the series holds personal data, COMPLIANCE otherwise;
   permanent records get a legal hold instead of a date);
3. verify each object (SHA-256 and Parquet row count, read back from S3);
4. write a "done" marker (keys, rows, id range), then XDEL exactly the archived entry ids.

A crash before step 4 repeats the window and rewrites the same keys (identical bytes are not
uploaded twice); a crash during the trim finds the marker and finishes the trim. Nothing is
lost and no row is stored twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from botocore.exceptions import ClientError
from redis import Redis
from redis.exceptions import LockNotOwnedError

from city.retention import RESTORE_CLASSES, RetentionSchedule, Series
from jobs import lake
from jobs.archive.aggregate import aggregate_counts
from queues import hot
from queues.hot import HotBatch
from queues.keys import Keys

LOCK_TIMEOUT_S = 900
DONE_TTL_S = 14 * 86400


class VerificationError(RuntimeError):
    """An object read back from S3 is not what was written: the hot tier is left untouched."""


@dataclass
class WindowResult:
    event_type: str
    window_start_ms: int
    action: str
    rows: int = 0
    keys: list[str] = field(default_factory=list)
    trimmed: int = 0
    skipped: str = ""
    note: str = ""


@dataclass
class ArchiveReport:
    windows: list[WindowResult] = field(default_factory=list)
    unscheduled: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(w.rows for w in self.windows)

    @property
    def trimmed(self) -> int:
        return sum(w.trimmed for w in self.windows)

    def summary(self) -> dict[str, Any]:
        return {
            "windows": len([w for w in self.windows if not w.skipped]),
            "skipped": len([w for w in self.windows if w.skipped]),
            "rows": self.rows,
            "trimmed": self.trimmed,
            "objects": sum(len(w.keys) for w in self.windows),
            "unscheduled": self.unscheduled,
        }


class Archiver:
    """Moves windows past their hot time from Redis to S3. Safe to run twice at once."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        s3: Any,
        bucket: str,
        schedule: RetentionSchedule,
        now: Callable[[], datetime] | None = None,
        shard: str | None = None,
    ):
        self.redis = redis
        self.shard = shard  # a partitioned city's shard: in the object names (`lake.object_key`)
        self.keys = keys
        self.s3 = s3
        self.bucket = bucket
        self.schedule = schedule
        self._now = now or self._redis_now

    def _redis_now(self) -> datetime:
        """Redis server time: the same clock that stamped the entry ids."""
        seconds, micros = self.redis.time()
        return datetime.fromtimestamp(seconds + micros / 1e6, UTC)

    def run(self) -> ArchiveReport:
        report = ArchiveReport()
        now = self._now()
        for event_type in hot.hot_types(self.redis, self.keys):
            series = self.schedule.series_for(event_type)
            if series is None:
                report.unscheduled.append(event_type)
                continue
            report.windows.extend(self.archive_type(event_type, series, now))
        return report

    def due_windows(self, event_type: str, series: Series, now: datetime) -> list[int]:
        """Start times (ms) of windows that hold entries and lie wholly before the hot cutoff."""
        width = series.window.seconds * 1000
        cutoff = int(series.hot_cutoff(now).timestamp() * 1000)
        starts: list[int] = []
        oldest = hot.oldest_ms(self.redis, self.keys, event_type)
        key = self.keys.hot(event_type)
        while oldest is not None:
            start = oldest - oldest % width
            if start + width > cutoff:
                break
            starts.append(start)
            rows = self.redis.xrange(key, str(start + width), "+", count=1)
            oldest = hot.entry_ms(rows[0][0]) if rows else None
        return starts

    def archive_type(self, event_type: str, series: Series, now: datetime) -> list[WindowResult]:
        return [
            self.archive_window(event_type, series, s, now)
            for s in self.due_windows(event_type, series, now)
        ]

    def archive_window(
        self, event_type: str, series: Series, start_ms: int, now: datetime
    ) -> WindowResult:
        result = WindowResult(event_type, start_ms, series.end_of_hot)
        lock = self.redis.lock(self.keys.archive_lock(event_type, start_ms), timeout=LOCK_TIMEOUT_S)
        if not lock.acquire(blocking=False):
            result.skipped = "locked by another run"
            return result
        try:
            self._archive_locked(event_type, series, start_ms, now, result)
        finally:
            try:
                lock.release()
            except LockNotOwnedError:
                # The lock expired (or was deleted) mid-run; another run may have done the same
                # window, which is safe (same keys, exact-id trims). Say so, do not fail the run.
                result.note = "window lock expired before release"
        return result

    def _archive_locked(
        self, event_type: str, series: Series, start_ms: int, now: datetime, result: WindowResult
    ) -> None:
        end_ms = start_ms + series.window.seconds * 1000
        done_key = self.keys.archive_done(event_type, start_ms)
        done = self.redis.get(done_key)
        encode = done is None and series.end_of_hot != "drop"
        entries, table = self._read(event_type, start_ms, end_ms, encode)
        if done is not None:
            # A previous run verified the objects and crashed while trimming: finish the trim.
            marker = json.loads(done)
            ids = [i for i in entries.ids if _in_range(i.decode(), marker["first"], marker["last"])]
            result.keys, result.rows, result.skipped = marker["keys"], 0, ""
            result.trimmed = self._trim(event_type, ids)
            self.redis.delete(done_key)
            return
        if not entries:
            return
        if table is None:  # drop
            keys: list[str] = []
        elif series.end_of_hot == "aggregate":
            keys = self._write_aggregates(event_type, series, table, start_ms, now)
        else:
            keys = self._write_events(event_type, series, table, start_ms, now)
        marker = {
            "keys": keys,
            "rows": len(entries),
            "first": entries.ids[0].decode(),
            "last": entries.ids[-1].decode(),
        }
        self.redis.set(done_key, json.dumps(marker), ex=DONE_TTL_S)
        result.keys, result.rows = keys, len(entries) if keys else 0
        result.trimmed = self._trim(event_type, entries.ids)
        self.redis.delete(done_key)

    def _read(
        self, event_type: str, start_ms: int, end_ms: int, encode: bool
    ) -> tuple[HotBatch, pa.Table | None]:
        """Read the window; encode each chunk on a helper thread while the next is read
        (Arrow's JSON reader releases the GIL), so reading and encoding overlap."""
        batch = HotBatch()
        futures = []
        with ThreadPoolExecutor(1) as pool:
            for chunk in hot.iter_batches(self.redis, self.keys, event_type, start_ms, end_ms):
                batch.extend(chunk)
                if encode:
                    futures.append(pool.submit(lake.encode_events, chunk))
            tables = [f.result() for f in futures]
        return batch, pa.concat_tables(tables) if tables else None

    def _trim(self, event_type: str, ids: list[bytes]) -> int:
        """Trim a window's entries (a contiguous read, oldest first)."""
        return hot.trim_window(self.redis, self.keys, event_type, ids)

    # -- writing -----------------------------------------------------------------------------

    def _write_events(
        self, event_type: str, series: Series, table: pa.Table, start_ms: int, now: datetime
    ) -> list[str]:
        keys = []
        for day, part in lake.split_by_day(table):
            key = lake.object_key(lake.EVENTS, series.id, event_type, day, start_ms, self.shard)
            body = lake.parquet_bytes(part)
            existing = self._existing_checksum(key)
            if existing is not None and existing != lake.sha256_b64(body):
                # Same key, other rows (a backfill into an archived window): merge, never replace.
                part = self._merge_existing(key, part)
                body = lake.parquet_bytes(part)
            self.put_verified(key, body, part.num_rows, series, day, now, existing)
            keys.append(key)
        index = lake.index_key(event_type, series.id)
        self.s3.put_object(Bucket=self.bucket, Key=index, Body=b"")
        return keys

    def _merge_existing(self, key: str, part: pa.Table) -> pa.Table:
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        try:
            old = lake.read_parquet(body).cast(lake.EVENT_SCHEMA)
        except pa.ArrowInvalid:
            # Not a Parquet file: an upload that failed verification (its rows were never
            # trimmed from Redis). Replace it; versioning keeps the bad bytes for inspection.
            return part
        new = part.filter(
            pc.invert(pc.is_in(part.column("entry_id"), value_set=old.column("entry_id")))
        )
        merged = pa.concat_tables([old, new])
        return merged.sort_by([("routed", "ascending"), ("entry_id", "ascending")])

    def _write_aggregates(
        self, event_type: str, series: Series, events: pa.Table, start_ms: int, now: datetime
    ) -> list[str]:
        table = aggregate_counts(events, series.aggregate_resolution)
        keys = []
        days = pc.cast(table.column("hour"), pa.date32())
        for day in sorted(pc.unique(days).to_pylist()):
            part = table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
            key = lake.object_key(lake.AGGREGATES, series.id, event_type, day, start_ms, self.shard)
            self.put_verified(key, lake.parquet_bytes(part), part.num_rows, series, day, now)
            keys.append(key)
        return keys

    def put_verified(
        self,
        key: str,
        body: bytes,
        rows: int,
        series: Series,
        day: date,
        now: datetime,
        existing: str | None = "unknown",
    ) -> None:
        """Upload (unless the identical object is already there), then read back and check."""
        checksum = lake.sha256_b64(body)
        if existing == "unknown":
            existing = self._existing_checksum(key)
        if existing != checksum:
            age = now - datetime.combine(day, time(0), tzinfo=UTC)
            storage_class = series.storage_class_at(age)
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": key,
                "Body": body,
                "ChecksumAlgorithm": "SHA256",
                "ChecksumSHA256": checksum,
                "StorageClass": storage_class,
                "Metadata": {"rows": str(rows), "sha256": checksum, "series": series.id},
            }
            if series.lock_mode is not None:
                until = series.retain_until(day)
                if until is None:
                    kwargs["ObjectLockLegalHoldStatus"] = "ON"
                else:
                    kwargs["ObjectLockMode"] = series.lock_mode
                    kwargs["ObjectLockRetainUntilDate"] = until
            self.s3.put_object(**kwargs)
        self.verify(key, checksum, rows)

    def _existing_checksum(self, key: str) -> str | None:
        """SHA-256 that S3 computed over the stored bytes (not our metadata, which could lie)."""
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return head.get("ChecksumSHA256")

    def verify(self, key: str, checksum: str, rows: int) -> None:
        """Read the object back: its bytes must hash to `checksum` and hold `rows` rows."""
        head = self.s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        if head.get("StorageClass", "STANDARD") in RESTORE_CLASSES:
            # Not readable without a restore: trust S3's own checksum and the row count we wrote.
            stored = head.get("Metadata", {}).get("rows")
            if head.get("ChecksumSHA256") != checksum or stored != str(rows):
                raise VerificationError(
                    f"s3://{self.bucket}/{key}: stored checksum/rows do not match"
                )
            return
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        if lake.sha256_b64(body) != checksum:
            raise VerificationError(f"s3://{self.bucket}/{key}: checksum mismatch after upload")
        if lake.parquet_rows(body) != rows:
            raise VerificationError(f"s3://{self.bucket}/{key}: row count mismatch after upload")


def _in_range(entry_id: str, first: str, last: str) -> bool:
    def parts(text: str) -> tuple[int, int]:
        ms, seq = text.split("-", 1)
        return int(ms), int(seq)

    return parts(first) <= parts(entry_id) <= parts(last)
