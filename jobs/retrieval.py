"""Retrieval from the archive: a slice of one event type, years back, in about a second.

Only partitions that can match are touched: one LIST per retention class that holds the type
(starting after the first wanted date, stopping at the last), then one GET per matching object,
in parallel. Objects in GLACIER / DEEP_ARCHIVE cannot be read until restored: retrieval raises
`RestoreRequired` naming them, and `request_restore` asks S3 to restore them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from city.retention import RESTORE_CLASSES
from jobs import lake

EARTH_RADIUS_M = 6_371_008.8
PARALLEL_GETS = 16


class RestoreRequired(RuntimeError):
    """Some matching objects sit in an archive storage class and must be restored first."""

    def __init__(self, keys: list[str], in_progress: list[str]):
        self.keys = keys
        self.in_progress = in_progress
        waiting = f"; restore already in progress for {len(in_progress)}" if in_progress else ""
        super().__init__(
            f"{len(keys)} object(s) must be restored from GLACIER/DEEP_ARCHIVE before reading "
            f"(cityrelay history --restore){waiting}: {', '.join(keys[:5])}"
            + (" ..." if len(keys) > 5 else "")
        )


@dataclass(frozen=True)
class Query:
    """What to retrieve. Times are event times; `start` inclusive, `end` exclusive."""

    event_type: str
    start: datetime | None = None
    end: datetime | None = None
    dept: str | None = None
    near: tuple[float, float, float] | None = None  # lat, lon, metres

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must carry a timezone")
        if self.start and self.end and self.end <= self.start:
            raise ValueError("end must be after start")
        if self.near is not None:
            lat, lon, metres = self.near
            if not (-90 <= lat <= 90 and -180 <= lon <= 180 and metres > 0):
                raise ValueError("near must be lat,lon,metres with a positive radius")


@dataclass(frozen=True)
class ArchiveObject:
    key: str
    storage_class: str
    size: int


class History:
    """Read the archive: `table(query)` -> Arrow table, `events(query)` -> iterator of dicts."""

    def __init__(self, s3: Any, bucket: str, page_size: int = 1000):
        self.s3 = s3
        self.bucket = bucket
        self.page_size = page_size

    def objects(self, query: Query) -> list[ArchiveObject]:
        """The archive objects whose partitions can hold matching events.

        One small LIST of the type's index finds the retention classes that hold it; then
        each is listed (in parallel) from the first wanted date (`StartAfter`) until the
        last, so years of other dates cost nothing.
        """
        classes = self._indexed_classes(query.event_type) or self._classes()
        if not classes:
            return []
        with ThreadPoolExecutor(min(PARALLEL_GETS, len(classes))) as pool:
            found = pool.map(lambda rc: self._list_class(rc, query), classes)
            return [obj for objs in found for obj in objs]

    def _list_class(self, rc: str, query: Query) -> list[ArchiveObject]:
        first = query.start.date() if query.start else None
        last = (query.end - timedelta(microseconds=1)).date() if query.end else None
        found: list[ArchiveObject] = []
        prefix = lake.partition_prefix(lake.EVENTS, rc, query.event_type)
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": prefix,
            "MaxKeys": self.page_size,
        }
        if first is not None:
            kwargs["StartAfter"] = f"{prefix}dt={first.isoformat()}"
        while True:
            page = self.s3.list_objects_v2(**kwargs)
            for item in page.get("Contents", []):
                parts = lake.parse_key(item["Key"])
                if parts is None:
                    continue
                if last is not None and parts.day > last:
                    return found
                found.append(
                    ArchiveObject(item["Key"], item.get("StorageClass", "STANDARD"), item["Size"])
                )
            if not page.get("IsTruncated"):
                return found
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def _indexed_classes(self, event_type: str) -> list[str]:
        prefix = f"{lake.INDEX_PREFIX}type={event_type}/rc="
        paginator = self.s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"][len(prefix) :] for page in pages for item in page.get("Contents", [])]

    def _classes(self) -> list[str]:
        """Every retention class in the archive (for objects written without an index)."""
        classes: list[str] = []
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": f"{lake.EVENTS}/rc=",
            "Delimiter": "/",
            "MaxKeys": self.page_size,
        }
        while True:
            page = self.s3.list_objects_v2(**kwargs)
            for common in page.get("CommonPrefixes", []):
                classes.append(common["Prefix"][len(lake.EVENTS) + 4 : -1])
            if not page.get("IsTruncated"):
                return classes
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def needs_restore(self, objects: list[ArchiveObject]) -> tuple[list[str], list[str]]:
        """(keys not readable yet, of which restore is already in progress)."""
        missing: list[str] = []
        ongoing: list[str] = []
        for obj in objects:
            if obj.storage_class not in RESTORE_CLASSES:
                continue
            restore = self.s3.head_object(Bucket=self.bucket, Key=obj.key).get("Restore", "")
            if 'ongoing-request="false"' in restore:
                continue
            missing.append(obj.key)
            if 'ongoing-request="true"' in restore:
                ongoing.append(obj.key)
        return missing, ongoing

    def request_restore(self, query: Query, days: int = 7, tier: str = "Standard") -> list[str]:
        """Ask S3 to restore every matching object that needs it; returns their keys."""
        missing, ongoing = self.needs_restore(self.objects(query))
        requested = [k for k in missing if k not in ongoing]
        for key in requested:
            self.s3.restore_object(
                Bucket=self.bucket,
                Key=key,
                RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}},
            )
        return requested

    def table(self, query: Query) -> pa.Table:
        """Matching events as one Arrow table (`lake.EVENT_SCHEMA`), ordered by event time."""
        objects = self.objects(query)
        missing, ongoing = self.needs_restore(objects)
        if missing:
            raise RestoreRequired(missing, ongoing)
        if not objects:
            return lake.EVENT_SCHEMA.empty_table()
        with ThreadPoolExecutor(min(PARALLEL_GETS, len(objects))) as pool:
            parts = list(pool.map(self._read, [o.key for o in objects]))
        table = pa.concat_tables([_filter(t, query) for t in parts])
        return table.sort_by([("time", "ascending"), ("entry_id", "ascending")])

    def _read(self, key: str) -> pa.Table:
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return lake.read_parquet(body).cast(lake.EVENT_SCHEMA)

    def events(self, query: Query) -> Iterator[dict[str, Any]]:
        """Matching events as wire JSON dicts (what producers sent), oldest first."""
        yield from lake.table_to_wire(self.table(query))


def _filter(table: pa.Table, query: Query) -> pa.Table:
    mask = pc.equal(table.column("type"), query.event_type)
    if query.start is not None:
        mask = pc.and_(
            mask,
            pc.greater_equal(
                table.column("time"), pa.scalar(query.start, table.schema.field("time").type)
            ),
        )
    if query.end is not None:
        mask = pc.and_(
            mask,
            pc.less(table.column("time"), pa.scalar(query.end, table.schema.field("time").type)),
        )
    if query.dept is not None:
        produced = pc.equal(table.column("department"), query.dept)
        received = _list_contains(table.column("recipients"), query.dept)
        mask = pc.and_(mask, pc.or_(pc.fill_null(produced, False), received))
    if query.near is not None:
        lat, lon, metres = query.near
        distances = haversine_m(table.column("lat"), table.column("lon"), lat, lon)
        mask = pc.and_(mask, pa.array(distances <= metres))
    return table.filter(pc.fill_null(mask, False))


def _list_contains(column: Any, value: str) -> pa.Array:
    """Per row: does the list column contain `value`?"""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    hits = np.zeros(len(column), dtype=bool)
    flat = pc.list_flatten(column)
    parents = pc.list_parent_indices(column).to_numpy()
    matched = pc.fill_null(pc.equal(flat, value), False).to_numpy(zero_copy_only=False)
    hits[parents[matched]] = True
    return pa.array(hits)


def haversine_m(lats: Any, lons: Any, lat: float, lon: float) -> np.ndarray:
    """Great-circle distance in metres from (lat, lon); rows without a point are infinitely far."""
    la = np.radians(
        np.asarray(pc.fill_null(lats, math.nan).to_numpy(zero_copy_only=False), dtype=float)
    )
    lo = np.radians(
        np.asarray(pc.fill_null(lons, math.nan).to_numpy(zero_copy_only=False), dtype=float)
    )
    p, q = math.radians(lat), math.radians(lon)
    h = np.sin((la - p) / 2) ** 2 + np.cos(la) * math.cos(p) * np.sin((lo - q) / 2) ** 2
    d = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0, 1)))
    return np.where(np.isnan(d), np.inf, d)


# -- output formats ----------------------------------------------------------------------------


def write_jsonl(events: Iterator[dict[str, Any]], out: Any) -> int:
    n = 0
    for event in events:
        out.write(json.dumps(event, separators=(",", ":")) + "\n")
        n += 1
    return n


def to_geojson(events: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """A FeatureCollection: each event a feature with its location geometry (or none)."""
    features = []
    for event in events:
        loc = event.get("location")
        if loc is None:
            geometry = None
        elif "lat" in loc:
            geometry = {"type": "Point", "coordinates": [loc["lon"], loc["lat"]]}
        else:
            geometry = loc
        props = {k: v for k, v in event.items() if k != "location"}
        features.append(
            {"type": "Feature", "id": event["id"], "geometry": geometry, "properties": props}
        )
    return {"type": "FeatureCollection", "features": features}


def parse_when(text: str) -> datetime:
    """``2024-03-01`` or an RFC 3339 time; dates and naive times are UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_near(text: str) -> tuple[float, float, float]:
    try:
        lat, lon, metres = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--near {text!r}: expected lat,lon,metres") from None
    return lat, lon, metres


def month_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, 1, tzinfo=UTC)
    nxt = datetime(day.year + (day.month == 12), day.month % 12 + 1, 1, tzinfo=UTC)
    return start, nxt
