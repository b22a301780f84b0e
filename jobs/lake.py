"""The cold tier's layout and format: a standard Hive-partitioned Parquet data lake on S3.

Objects (the first partition key is the retention class, so S3 lifecycle rules filter by prefix):

- ``events/rc=<series>/type=<event type>/dt=<event date>/part-<window start>.parquet``:
  full events, one row each: typed envelope columns + ``data`` (the payload) as JSON.
- ``aggregates/rc=<series>/type=<event type>/dt=<date>/part-<window start>.parquet``:
  hourly counts per H3 cell for ``aggregate`` series.

Keys are a pure function of (series, type, event date, window), so a crashed archive run that
is repeated overwrites its own objects instead of adding duplicates. Any Parquet reader
(``pyarrow.dataset``, DuckDB, Athena, Spark) reads the lake directly.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from queues.hot import HotEntry

EVENTS = "events"
AGGREGATES = "aggregates"
HOLDS_PREFIX = "control/holds/"
ENVELOPE = (
    "id",
    "source",
    "specversion",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "data",
    "priority",
    "location",
    "department",
    "h3cell",
)
_STRING_FIELDS = ("id", "source", "specversion", "type", "subject", "datacontenttype", "dataschema")
_STRING_FIELDS += ("priority", "department", "h3cell")

EVENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("specversion", pa.string()),
        ("type", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("subject", pa.string()),
        ("datacontenttype", pa.string()),
        ("dataschema", pa.string()),
        ("priority", pa.string()),
        ("department", pa.string()),
        ("h3cell", pa.string()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("location", pa.string()),
        ("data", pa.string()),
        ("ext", pa.string()),
        ("recipients", pa.list_(pa.string())),
        ("routed", pa.timestamp("ms", tz="UTC")),
        ("entry_id", pa.string()),
        ("ingest_id", pa.string()),
    ]
)
AGGREGATE_SCHEMA = pa.schema(
    [
        ("type", pa.string()),
        ("hour", pa.timestamp("s", tz="UTC")),
        ("h3cell", pa.string()),
        ("count", pa.int64()),
    ]
)
_KEY = re.compile(
    r"^(?P<kind>events|aggregates)/rc=(?P<rc>[^/]+)/type=(?P<type>[^/]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/"
    r"part-(?P<window>[0-9TZ]+)\.parquet$"
)


@dataclass(frozen=True)
class S3Settings:
    """Where the archive lives. From the environment so the same code runs on AWS and moto."""

    bucket: str = "cityrelay-archive"
    endpoint_url: str | None = None
    region: str = "us-east-1"

    @classmethod
    def from_env(cls) -> S3Settings:
        return cls(
            bucket=os.environ.get("CITYRELAY_S3_BUCKET", "cityrelay-archive"),
            endpoint_url=os.environ.get("CITYRELAY_S3_ENDPOINT")
            or os.environ.get("AWS_ENDPOINT_URL"),
            region=os.environ.get("AWS_DEFAULT_REGION")
            or os.environ.get("AWS_REGION")
            or "us-east-1",
        )

    @property
    def ledger_bucket(self) -> str:
        """The Object-Locked bucket that holds the hash-chained disposition log."""
        return os.environ.get("CITYRELAY_S3_LEDGER_BUCKET", f"{self.bucket}-ledger")

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region)


def ensure_buckets(s3: Any, settings: S3Settings) -> None:
    """Create the archive and ledger buckets (versioned, Object Lock enabled) if missing."""
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for name in (settings.bucket, settings.ledger_bucket):
        if name in existing:
            continue
        kwargs: dict[str, Any] = {"Bucket": name, "ObjectLockEnabledForBucket": True}
        if settings.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
        s3.create_bucket(**kwargs)


def window_name(window_start_ms: int) -> str:
    return datetime.fromtimestamp(window_start_ms / 1000, UTC).strftime("%Y%m%dT%H%M%SZ")


def partition_prefix(kind: str, rc: str, event_type: str, day: date | None = None) -> str:
    base = f"{kind}/rc={rc}/type={event_type}/"
    return base if day is None else f"{base}dt={day.isoformat()}/"


def object_key(kind: str, rc: str, event_type: str, day: date, window_start_ms: int) -> str:
    return (
        f"{partition_prefix(kind, rc, event_type, day)}part-{window_name(window_start_ms)}.parquet"
    )


@dataclass(frozen=True)
class KeyParts:
    kind: str
    rc: str
    event_type: str
    day: date
    window: str


def parse_key(key: str) -> KeyParts | None:
    """The partition values of an archive object key, or None for anything else."""
    match = _KEY.match(key)
    if not match:
        return None
    return KeyParts(
        match["kind"], match["rc"], match["type"], date.fromisoformat(match["dt"]), match["window"]
    )


def encode_events(entries: Sequence[HotEntry]) -> pa.Table:
    """Hot entries -> one Arrow table in `EVENT_SCHEMA` (one JSON parse per event)."""
    cols: dict[str, list[Any]] = {name: [] for name in EVENT_SCHEMA.names}
    loads, dumps = json.loads, json.dumps
    known = set(ENVELOPE)
    for entry in entries:
        event = loads(entry.event)
        for name in _STRING_FIELDS:
            cols[name].append(event.get(name))
        cols["time"].append(event.get("time"))
        data = event.get("data")
        cols["data"].append(None if data is None else dumps(data, separators=(",", ":")))
        loc = event.get("location")
        lat = lon = None
        if loc is None:
            cols["location"].append(None)
        else:
            cols["location"].append(dumps(loc, separators=(",", ":")))
            if "lat" in loc:
                lat, lon = loc["lat"], loc["lon"]
            elif loc.get("type") == "Point":
                lon, lat = loc["coordinates"][:2]
        cols["lat"].append(lat)
        cols["lon"].append(lon)
        extra = {k: v for k, v in event.items() if k not in known}
        cols["ext"].append(dumps(extra, separators=(",", ":")) if extra else None)
        cols["recipients"].append(entry.recipients.split(",") if entry.recipients else [])
        cols["routed"].append(int(entry.entry_id.split("-", 1)[0]))
        cols["entry_id"].append(entry.entry_id)
        cols["ingest_id"].append(entry.ingest_id)
    arrays = []
    for field in EVENT_SCHEMA:
        values = cols[field.name]
        if field.name == "time":
            arrays.append(pa.array(values, pa.string()).cast(field.type))
        elif field.name == "routed":
            arrays.append(pa.array(values, pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def event_dates(table: pa.Table) -> pa.Array:
    """The UTC date of each event's `time`: the ``dt=`` partition it belongs to."""
    return pc.cast(table.column("time"), pa.date32())


def split_by_day(table: pa.Table) -> list[tuple[date, pa.Table]]:
    """Rows grouped by event date, in date order (a window usually holds one date)."""
    days = event_dates(table)
    out = []
    for day in sorted(pc.unique(days).to_pylist()):
        out.append((day, table.filter(pc.equal(days, pa.scalar(day, pa.date32())))))
    return out


def _format_time(value: datetime) -> str:
    text = value.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


def table_to_wire(table: pa.Table) -> Iterator[dict[str, Any]]:
    """Rows back to the wire JSON dicts they were archived from (round-trip exact)."""
    loads = json.loads
    for row in table.to_pylist():
        event: dict[str, Any] = {}
        for name in ENVELOPE:
            value = row.get(name)
            if value is None:
                continue
            if name == "time":
                value = _format_time(value)
            elif name in ("data", "location"):
                value = loads(value)
            event[name] = value
        if row.get("ext"):
            event.update(loads(row["ext"]))
        yield event


def parquet_bytes(table: pa.Table) -> bytes:
    """Compact, deterministic Parquet (zstd): the same rows always give the same bytes."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=256 * 1024)
    return sink.getvalue()


def sha256_b64(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


def read_parquet(body: bytes, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(io.BytesIO(body), columns=columns)


def parquet_rows(body: bytes) -> int:
    return int(pq.read_metadata(io.BytesIO(body)).num_rows)
