"""The cold tier's layout and format: a standard Hive-partitioned Parquet data lake on S3.

Objects (the first partition key is the retention class, so S3 lifecycle rules filter by prefix):

- ``events/rc=<series>/type=<event type>/dt=<event date>/part-<window start>.parquet``:
  full events, one row each: typed envelope columns (id, source, type, time, priority,
  department, h3cell, lat/lon, recipients, routing time...) + ``event_json``, the event as
  routed (payload included) as JSON text.
- ``aggregates/rc=<series>/type=<event type>/dt=<date>/part-<window start>.parquet``:
  hourly counts per H3 cell for ``aggregate`` series.
- ``index/type=<event type>/rc=<series>``: empty markers, so retrieval finds the classes that
  hold a type with one small LIST.

In a partitioned city (``partitions:``) every shard archives its own hot tier into the one
bucket of the city, and its objects are named ``part-<window start>-<shard>.parquet`` inside
the same partitions: two shards archiving one type and window write two objects, and a LIST
of a type's date finds every shard's. An unpartitioned city's names carry no shard (lakes
written before stay as they are); `parse_key` reads both.

Keys are a pure function of (series, type, event date, window, shard), so a crashed archive run
that is repeated overwrites its own objects instead of adding duplicates. Any Parquet reader
(``pyarrow.dataset``, DuckDB, Athena, Spark) reads the lake directly.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import boto3
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from queues.hot import HotBatch

EVENTS = "events"
AGGREGATES = "aggregates"
HOLDS_PREFIX = "control/holds/"
INDEX_PREFIX = "index/"
# Envelope attributes stored as typed (string) columns; `time` is a timestamp column.
_STRING_FIELDS: tuple[str, ...] = ("id", "source", "specversion", "type", "subject")
_STRING_FIELDS += ("datacontenttype", "dataschema", "priority", "department", "h3cell")

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
        ("recipients", pa.list_(pa.string())),
        ("routed", pa.timestamp("ms", tz="UTC")),
        ("entry_id", pa.string()),
        ("ingest_id", pa.string()),
        ("event_json", pa.string()),
    ]
)
# What the C++ JSON reader extracts from each event; everything else stays in `event_json`.
_ENVELOPE_JSON = pa.schema(
    [(name, pa.string()) for name in _STRING_FIELDS]
    + [
        ("time", pa.string()),
        (
            "location",
            pa.struct([("lat", pa.float64()), ("lon", pa.float64()), ("type", pa.string())]),
        ),
    ]
)
_JSON_PARSE = pajson.ParseOptions(
    explicit_schema=_ENVELOPE_JSON, unexpected_field_behavior="ignore"
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
    r"part-(?P<window>[0-9TZ]+)(?:-(?P<shard>[a-z][a-z0-9-]*))?\.parquet$"
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


def index_key(event_type: str, rc: str) -> str:
    """An empty marker: "events of this type are archived under this retention class"."""
    return f"{INDEX_PREFIX}type={event_type}/rc={rc}"


def object_key(
    kind: str, rc: str, event_type: str, day: date, window_start_ms: int, shard: str | None = None
) -> str:
    """The object of one window's rows of one date; `shard` is the archiving shard of a
    partitioned city (None: unpartitioned, no shard in the name)."""
    part = window_name(window_start_ms)
    if shard is not None:
        part = f"{part}-{shard}"
    return f"{partition_prefix(kind, rc, event_type, day)}part-{part}.parquet"


@dataclass(frozen=True)
class KeyParts:
    kind: str
    rc: str
    event_type: str
    day: date
    window: str
    shard: str | None = None  # the shard that archived it (partitioned cities only)


def parse_key(key: str) -> KeyParts | None:
    """The partition values of an archive object key, or None for anything else."""
    match = _KEY.match(key)
    if not match:
        return None
    day = date.fromisoformat(match["dt"])
    return KeyParts(match["kind"], match["rc"], match["type"], day, match["window"], match["shard"])


def encode_events(batch: HotBatch) -> pa.Table:
    """A window of hot entries -> one Arrow table in `EVENT_SCHEMA`.

    The typed envelope columns come from Arrow's C++ JSON reader over all events at once (no
    per-event Python parsing: this is the archive's hot loop); ``event_json`` keeps each event
    exactly as routed (payload included), so the round trip is exact and no field is lost.
    """
    bodies = batch.events
    lines = b"\n".join(bodies)
    if lines.count(b"\n") != len(bodies) - 1:  # some event spans lines: re-serialise those
        bodies = [_one_line(body) for body in bodies]
        lines = b"\n".join(bodies)
    envelope = pajson.read_json(
        io.BytesIO(lines),
        read_options=pajson.ReadOptions(block_size=4 << 20),  # blocks parse in parallel
        parse_options=_JSON_PARSE,
    )
    if envelope.num_rows != len(batch):
        raise ValueError(f"{len(batch)} hot entries parsed as {envelope.num_rows} events")
    location = envelope.column("location").combine_chunks()
    lat, lon = location.field("lat"), location.field("lon")
    geojson_points = pc.fill_null(pc.equal(location.field("type"), "Point"), False)
    if pc.any(geojson_points).as_py():  # GeoJSON points carry [lon, lat]: read those few rows
        lat_list, lon_list = lat.to_pylist(), lon.to_pylist()
        for i in pc.indices_nonzero(geojson_points).to_pylist():
            lon_list[i], lat_list[i] = orjson.loads(bodies[i])["location"]["coordinates"][:2]
        lat, lon = pa.array(lat_list, pa.float64()), pa.array(lon_list, pa.float64())
    ids = _text(batch.ids)
    tos = _text(batch.recipients)
    recipients = pc.split_pattern(tos, ",")
    if pc.any(pc.equal(tos, "")).as_py():  # unrouted events: no recipients, not [""]
        recipients = pa.array([[] if not r else r.decode().split(",") for r in batch.recipients])
    cols: dict[str, Any] = {name: envelope.column(name) for name in _STRING_FIELDS}
    cols.update(
        time=envelope.column("time"),
        lat=lat,
        lon=lon,
        recipients=recipients,
        routed=pc.list_element(pc.split_pattern(ids, "-", max_splits=1), 0).cast(pa.int64()),
        entry_id=ids,
        ingest_id=_text(batch.ingest_ids),
        event_json=_text(bodies),
    )
    arrays = [cols[f.name].cast(f.type) for f in EVENT_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def _text(values: list[bytes]) -> pa.Array:
    """UTF-8 bytes -> an Arrow string array (validated in C++, no Python decode)."""
    return pa.array(values, pa.binary()).cast(pa.string())


def _one_line(body: bytes) -> bytes:
    """Events are line-delimited for the reader: re-serialise the rare pretty-printed one."""
    return orjson.dumps(orjson.loads(body)) if b"\n" in body else body


def event_dates(table: pa.Table) -> pa.Array:
    """The UTC date of each event's `time`: the ``dt=`` partition it belongs to."""
    return pc.cast(table.column("time"), pa.date32())


def split_by_day(table: pa.Table) -> list[tuple[date, pa.Table]]:
    """Rows grouped by event date, in date order (a window usually holds one date)."""
    days = event_dates(table)
    unique = sorted(pc.unique(days).to_pylist())
    if len(unique) == 1:  # the usual case: no copy
        return [(unique[0], table)]
    out = []
    for day in unique:
        out.append((day, table.filter(pc.equal(days, pa.scalar(day, pa.date32())))))
    return out


def table_to_wire(table: pa.Table) -> Iterator[dict[str, Any]]:
    """Rows back to the wire JSON dicts they were archived from (exact: the stored JSON)."""
    loads = orjson.loads
    for text in table.column("event_json").to_pylist():
        yield loads(text)


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
