"""One records series: which event types it covers, how long and where they are kept, and after.

A records officer declares *records series* in the city config (section ``retention:``). Each
series covers some event types and says:

- ``hot``: how long events stay in Redis (replay, recent queries);
- ``end_of_hot``: what the archive does when that window has passed: ``drop`` (ephemeral
  telemetry), ``aggregate`` (keep only hourly counts per H3 cell), ``archive`` (full events) or
  ``record`` (full events under S3 Object Lock, so nobody can delete them early);
- ``storage``: S3 storage class by age (STANDARD, then STANDARD_IA no earlier than 30 days, ...);
- ``retain`` + ``trigger``: the total retention and the moment it starts counting;
- ``disposition``: at the end of retention ``destroy``, ``anonymise`` (then keep) or ``transfer``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from city.events import EVENT_TYPE
from city.retention.durations import Duration, _duration

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


def type_matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type
