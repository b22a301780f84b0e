"""Legal holds (litigation, public-records requests): they block disposition of what they cover."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from city.retention.series import type_matches

HoldKind = Literal["litigation", "public_records", "audit", "other"]


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
