"""Shared helpers for the archive tests: a moto S3 with the buckets, hot-tier events at chosen
routing times, and a request counter (moto records lifecycle rules but never runs them, so
storage-class changes are simulated with copy_object)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from moto import mock_aws

from city.events import Event
from city.retention import EXAMPLE_RETENTION, RetentionSchedule, parse_retention
from jobs import lake
from queues.hot import hot_append
from queues.keys import Keys

T0 = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)


def schedule(**overrides: Any) -> RetentionSchedule:
    """The example schedule, with series fields overridden by id: {"dispatch-records": {...}}."""
    data = json.loads(json.dumps(EXAMPLE_RETENTION))
    for series in data["series"]:
        series.update(overrides.get(series["id"], {}))
    return parse_retention(data)


def make_event(event_type: str, when: datetime, n: int, **attrs: Any) -> dict[str, Any]:
    attrs.setdefault("location", {"lat": 47.60 + n * 1e-4, "lon": -122.33})
    attrs.setdefault("department", "spd")
    data = attrs.pop("data", {"n": n, "caller_phone": "206-555-0100", "plate": "ABC123"})
    return Event.new(event_type, "/city/spd", data, time=when, **attrs).to_wire()


def add_hot(
    redis: Any,
    keys: Keys,
    event_type: str,
    start: datetime,
    count: int,
    step: timedelta = timedelta(minutes=1),
    recipients: tuple[str, ...] = ("fire", "spd"),
    **attrs: Any,
) -> list[dict[str, Any]]:
    """`count` events whose event time and routing time are `start + i * step`."""
    events = []
    pipe = redis.pipeline(transaction=False)
    for i in range(count):
        when = start + i * step
        event = make_event(event_type, when, i, **attrs)
        ms = int(when.timestamp() * 1000)
        hot_append(
            pipe, keys, json.dumps(event).encode(), recipients, f"{ms}-0", event_type, f"{ms}-{i}"
        )
        events.append(event)
    pipe.execute()
    return events


def s3_setup(bucket: str = "cityrelay-archive") -> tuple[lake.S3Settings, Any]:
    settings = lake.S3Settings(bucket=bucket)
    s3 = settings.client()
    lake.ensure_buckets(s3, settings)
    return settings, s3


class RequestCounter:
    """Counts S3 API calls made by one client (one call = one request here: no retries)."""

    def __init__(self, s3: Any):
        self.calls: Counter[str] = Counter()
        s3.meta.events.register("before-call.s3.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def reset(self) -> None:
        self.calls.clear()


def all_rows(s3: Any, bucket: str, prefix: str) -> list[str]:
    """Every event id stored under `prefix` (current versions)."""
    ids: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            ids.extend(lake.read_parquet(body, ["id"]).column("id").to_pylist())
    return ids


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto S3 with fake credentials; no endpoint from the environment leaks in."""
    for name in ("AWS_ENDPOINT_URL", "CITYRELAY_S3_ENDPOINT", "CITYRELAY_S3_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield
