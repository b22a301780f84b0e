"""The retention schedule: how long each kind of event is kept, where, and what happens after.

A records officer declares *records series* in the city config (section ``retention:``). Each
series covers some event types and says:

- ``hot``: how long events stay in Redis (replay, recent queries);
- ``end_of_hot``: what the archive does when that window has passed: ``drop`` (ephemeral
  telemetry), ``aggregate`` (keep only hourly counts per H3 cell), ``archive`` (full events) or
  ``record`` (full events under S3 Object Lock, so nobody can delete them early);
- ``storage``: S3 storage class by age (STANDARD, then STANDARD_IA no earlier than 30 days, ...);
- ``retain`` + ``trigger``: the total retention and the moment it starts counting;
- ``disposition``: at the end of retention ``destroy``, ``anonymise`` (then keep) or ``transfer``.

Legal holds (litigation, public-records requests) block disposition of what they cover.
This module is pure: the archive, lifecycle and disposition jobs ask it every question about
time and classes, so the rules live in one place and are tested without S3.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from city.errors import ConfigError
from city.events import EVENT_TYPE

SERIES_ID = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w|y)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

StorageClass = Literal[
    "STANDARD", "STANDARD_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"
]
# Classes whose objects must be restored before they can be read.
RESTORE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
EndOfHot = Literal["drop", "aggregate", "archive", "record"]
Disposition = Literal["destroy", "anonymise", "transfer"]
Trigger = Literal["event", "end_of_year"]
HoldKind = Literal["litigation", "public_records", "audit", "other"]


class Duration(BaseModel):
    """A period such as ``30d``, ``6h``, ``7y``; years are calendar years, as the law counts."""

    model_config = ConfigDict(frozen=True)

    value: int = Field(ge=0)
    unit: Literal["s", "m", "h", "d", "w", "y"]

    @classmethod
    def parse(cls, text: Any) -> Duration:
        if isinstance(text, Duration):
            return text
        if isinstance(text, dict):
            return cls.model_validate(text)
        if isinstance(text, int) and not isinstance(text, bool):
            return cls(value=text, unit="d")
        match = _DURATION.match(str(text))
        if not match:
            raise ValueError(f"{text!r} is not a duration like '30d', '6h', '7y' (s m h d w y)")
        return cls(value=int(match.group(1)), unit=match.group(2))  # type: ignore[arg-type]

    def add_to(self, moment: datetime) -> datetime:
        if self.unit == "y":
            return _add_years(moment, self.value)
        return moment + timedelta(seconds=self.value * _UNIT_SECONDS[self.unit])

    @property
    def approx_days(self) -> int:
        """Whole days, rounding years up to 366 days (used where S3 wants a day count)."""
        if self.unit == "y":
            return self.value * 366
        return -(-self.value * _UNIT_SECONDS[self.unit] // 86400)

    @property
    def seconds(self) -> int:
        """Exact seconds for sub-year units; years count 366 days (never shorter than the law)."""
        if self.unit == "y":
            return self.value * 366 * 86400
        return self.value * _UNIT_SECONDS[self.unit]

    def __str__(self) -> str:
        return f"{self.value}{self.unit}"


def _add_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February -> 1 March: never earlier than the law says
        return moment.replace(year=moment.year + years, month=3, day=1)


def _duration(value: Any) -> Duration:
    return Duration.parse(value)


class StorageTier(BaseModel):
    """From ``after`` (age of the object) on, keep objects in ``storage_class``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    after: Duration = Field(default_factory=lambda: Duration(value=0, unit="d"))
    storage_class: StorageClass = Field(alias="class")

    @field_validator("after", mode="before")
    @classmethod
    def _parse_after(cls, value: Any) -> Duration:
        return _duration(value)


class Series(BaseModel):
    """One records series of the retention schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="the retention class; the rc=<id> prefix of its objects in S3")
    types: list[str] = Field(min_length=1, description="event types or prefixes like 'traffic.*'")
    description: str = ""
    hot: Duration = Field(description="how long events stay in Redis before the archive acts")
    window: Duration = Field(
        default_factory=lambda: Duration(value=1, unit="d"),
        description="archive window: one Parquet object per type, window and event date",
    )
    end_of_hot: EndOfHot
    aggregate_resolution: int = Field(default=8, ge=0, le=15, description="H3 resolution")
    storage: list[StorageTier] = Field(
        default_factory=lambda: [StorageTier.model_validate({"class": "STANDARD"})]
    )
    retain: Duration | Literal["permanent"] = Field(
        default="permanent", description="total retention, counted from the trigger"
    )
    trigger: Trigger = "event"
    disposition: Disposition = "destroy"
    anonymise_fields: list[str] = Field(
        default_factory=list, description="payload (data) fields removed by 'anonymise'"
    )
    transfer_to: str | None = Field(default=None, description="s3://bucket/prefix for 'transfer'")
    personal_data: bool = Field(
        default=False,
        description="personal data: GOVERNANCE-mode lock, so lawful erasure stays possible",
    )
    authority: str = Field(default="", description="the schedule item / statute that sets this")

    @field_validator("hot", "window", mode="before")
    @classmethod
    def _parse_duration(cls, value: Any) -> Duration:
        return _duration(value)

    @field_validator("retain", mode="before")
    @classmethod
    def _parse_retain(cls, value: Any) -> Duration | str:
        return "permanent" if value in ("permanent", None) else _duration(value)

    @field_validator("id")
    @classmethod
    def _id_is_slug(cls, value: str) -> str:
        if not SERIES_ID.match(value):
            raise ValueError("series ids are lower-case letters, digits and '-', max 40")
        return value

    @field_validator("types")
    @classmethod
    def _types_are_patterns(cls, values: list[str]) -> list[str]:
        for value in values:
            base = value[:-2] if value.endswith(".*") else value
            if value != "*" and not (
                EVENT_TYPE.match(base) or re.match(r"^[a-z][a-z0-9_]*$", base)
            ):
                raise ValueError(
                    f"{value!r} is neither an event type nor a prefix like 'traffic.*'"
                )
        return values

    @model_validator(mode="after")
    def _consistent(self) -> Series:
        if self.window.seconds <= 0 or 86400 % self.window.seconds:
            raise ValueError("window must divide a day evenly (e.g. 15m, 1h, 6h, 1d)")
        if self.hot.seconds <= 0:
            raise ValueError("hot must be longer than zero")
        if not self.storage or self.storage[0].after.seconds != 0:
            raise ValueError(
                "storage must start with a tier at after: 0d (the class objects are written in)"
            )
        previous: StorageTier | None = None
        for tier in self.storage:
            days = tier.after.approx_days
            if previous is not None and days <= previous.after.approx_days:
                raise ValueError("storage tiers must be in increasing 'after' order")
            if tier.storage_class == "STANDARD_IA" and 0 < days < 30:
                raise ValueError("S3 moves objects to STANDARD_IA no earlier than 30 days")
            if (
                previous is not None
                and previous.storage_class == "STANDARD_IA"
                and previous.after.approx_days > 0
                and days - previous.after.approx_days < 30
            ):
                raise ValueError("objects must stay 30 days in STANDARD_IA before the next tier")
            previous = tier
        if self.disposition == "transfer" and not (self.transfer_to or "").startswith("s3://"):
            raise ValueError("disposition 'transfer' needs transfer_to: s3://bucket/prefix")
        if self.disposition == "anonymise" and not self.anonymise_fields:
            raise ValueError(
                "disposition 'anonymise' needs anonymise_fields (the payload fields to remove)"
            )
        if (
            self.end_of_hot == "drop"
            and self.retain != "permanent"
            and self.retain.seconds < self.hot.seconds
        ):
            raise ValueError("retain is shorter than hot")
        if self.end_of_hot == "drop" and self.retain == "permanent":
            raise ValueError("'drop' series keep nothing: set retain to the hot window")
        return self

    # -- decisions ---------------------------------------------------------------------------

    @property
    def keeps_events(self) -> bool:
        """Whether full events go to S3 (``archive`` / ``record``)."""
        return self.end_of_hot in ("archive", "record")

    @property
    def permanent(self) -> bool:
        return self.retain == "permanent"

    @property
    def lock_mode(self) -> Literal["COMPLIANCE", "GOVERNANCE"] | None:
        """Object Lock mode: only ``record`` series are locked; personal data -> GOVERNANCE."""
        if self.end_of_hot != "record":
            return None
        return "GOVERNANCE" if self.personal_data else "COMPLIANCE"

    def storage_class_at(self, age: timedelta) -> str:
        """The storage class an object of this age belongs in."""
        days = age.total_seconds() / 86400
        chosen = self.storage[0].storage_class
        for tier in self.storage:
            if days >= tier.after.approx_days:
                chosen = tier.storage_class
        return chosen

    def retention_start(self, day: date) -> datetime:
        """When the retention clock starts for events of one day (the end of that day or year)."""
        if self.trigger == "end_of_year":
            return datetime(day.year + 1, 1, 1, tzinfo=UTC)
        return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)

    def retain_until(self, day: date) -> datetime | None:
        """When events of that (event-time) day may be disposed of; None for permanent."""
        if isinstance(self.retain, str):
            return None
        return self.retain.add_to(self.retention_start(day))

    def hot_cutoff(self, now: datetime) -> datetime:
        """Events routed before this moment have passed the hot window."""
        return now - timedelta(seconds=self.hot.seconds)


class Hold(BaseModel):
    """A legal hold: while it exists, nothing it covers is disposed of."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    kind: HoldKind
    reason: str = Field(min_length=1)
    placed_by: str = Field(min_length=1)
    placed_at: datetime
    series: str | None = Field(default=None, description="None: every series")
    types: list[str] = Field(default_factory=list, description="empty: every type of the series")
    start: date | None = Field(default=None, description="first event date covered (inclusive)")
    end: date | None = Field(default=None, description="last event date covered (inclusive)")

    def covers(self, series_id: str, event_type: str, day: date) -> bool:
        if self.series is not None and self.series != series_id:
            return False
        if self.types and not any(type_matches(p, event_type) for p in self.types):
            return False
        if self.start is not None and day < self.start:
            return False
        return not (self.end is not None and day > self.end)


def blocking_holds(holds: list[Hold], series_id: str, event_type: str, day: date) -> list[Hold]:
    """The holds that forbid disposing of this series' events of that type and day."""
    return [h for h in holds if h.covers(series_id, event_type, day)]


def type_matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


class RetentionSchedule(BaseModel):
    """The ``retention:`` section of the city config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    series: list[Series] = Field(min_length=1)

    @model_validator(mode="after")
    def _ids_unique(self) -> RetentionSchedule:
        seen: set[str] = set()
        for series in self.series:
            if series.id in seen:
                raise ValueError(f"duplicate series id {series.id!r}")
            seen.add(series.id)
        return self

    def series_for(self, event_type: str) -> Series | None:
        """The series an event type belongs to: exact type beats the longest prefix beats '*'."""
        best: tuple[int, Series] | None = None
        for series in self.series:
            for pattern in series.types:
                if not type_matches(pattern, event_type):
                    continue
                score = 10_000 if pattern == event_type else len(pattern) if pattern != "*" else 0
                if best is None or score > best[0]:
                    best = (score, series)
        return best[1] if best else None

    def get(self, series_id: str) -> Series:
        for series in self.series:
            if series.id == series_id:
                return series
        raise KeyError(f"no retention series {series_id!r}")


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        parts.append(f"[{item}]" if isinstance(item, int) else ("." if parts else "") + str(item))
    return "".join(parts)


def parse_retention(data: Any, source: str = "<config>") -> RetentionSchedule:
    """Validate a ``retention:`` section; problems are reported as ``retention.series[i].field``."""
    if not isinstance(data, dict):
        raise ConfigError(source, [("retention", "must be a mapping with series: [...]")])
    try:
        return RetentionSchedule.model_validate(data)
    except ValidationError as exc:
        problems = [("retention." + _loc_to_path(err["loc"]), err["msg"]) for err in exc.errors()]
        raise ConfigError(source, problems) from None


# Realistic defaults for the example city (US municipal general records schedules: raw
# surveillance-like telemetry 30 days; dispatch records 3 years; traffic studies 10 years;
# utility billing 7 years after the fiscal year; emergency incident records permanent).
EXAMPLE_RETENTION: dict[str, Any] = {
    "series": [
        {
            "id": "telemetry-ephemeral",
            "types": ["iot.*"],
            "description": "device heartbeats: only useful while fresh",
            "hot": "6h",
            "window": "1h",
            "end_of_hot": "drop",
            "retain": "6h",
            "authority": "transitory records (no retention requirement)",
        },
        {
            "id": "vehicle-telemetry",
            "types": ["transit.vehicle_position"],
            "description": "raw vehicle positions: like CCTV footage, kept 30 days",
            "hot": "1d",
            "end_of_hot": "archive",
            "retain": "30d",
            "disposition": "destroy",
            "authority": "GS 2016-010: surveillance recordings, 30 days",
        },
        {
            "id": "air-quality-counts",
            "types": ["environment.*"],
            "description": "hourly counts per H3 cell for environmental studies",
            "hot": "2d",
            "end_of_hot": "aggregate",
            "aggregate_resolution": 8,
            "storage": [
                {"after": "0d", "class": "STANDARD"},
                {"after": "90d", "class": "GLACIER_IR"},
            ],
            "retain": "10y",
            "authority": "environmental monitoring data, 10 years",
        },
        {
            "id": "traffic-studies",
            "types": ["traffic.*"],
            "description": "incidents feed traffic safety studies",
            "hot": "2d",
            "end_of_hot": "archive",
            "storage": [
                {"after": "0d", "class": "STANDARD"},
                {"after": "30d", "class": "STANDARD_IA"},
                {"after": "365d", "class": "GLACIER_IR"},
            ],
            "retain": "10y",
            "disposition": "anonymise",
            "anonymise_fields": ["plate"],
            "personal_data": True,
            "authority": "GS 2012-020: traffic studies, 10 years",
        },
        {
            "id": "utility-billing",
            "types": ["utility.*"],
            "description": "meter events back billing adjustments",
            "hot": "1d",
            "end_of_hot": "record",
            "storage": [
                {"after": "0d", "class": "STANDARD"},
                {"after": "30d", "class": "STANDARD_IA"},
                {"after": "180d", "class": "GLACIER_IR"},
            ],
            "retain": "7y",
            "trigger": "end_of_year",
            "authority": "GS 2011-178: utility billing, 6 years after end of fiscal year (+1)",
        },
        {
            "id": "dispatch-records",
            "types": ["safety.*"],
            "description": "CAD dispatch records; caller phone numbers are personal data",
            "hot": "1d",
            "end_of_hot": "record",
            "storage": [
                {"after": "0d", "class": "STANDARD"},
                {"after": "30d", "class": "STANDARD_IA"},
                {"after": "90d", "class": "GLACIER_IR"},
            ],
            "retain": "3y",
            "personal_data": True,
            "authority": "LE 2010-003: dispatch records, 3 years",
        },
        {
            "id": "emergency-incidents",
            "types": ["health.*"],
            "description": "emergency incident records: permanent (archival)",
            "hot": "1d",
            "end_of_hot": "record",
            "storage": [
                {"after": "0d", "class": "STANDARD"},
                {"after": "30d", "class": "STANDARD_IA"},
                {"after": "90d", "class": "GLACIER_IR"},
            ],
            "retain": "permanent",
            "personal_data": True,
            "authority": "EM 2009-001: major incident records, permanent (archival)",
        },
    ]
}
