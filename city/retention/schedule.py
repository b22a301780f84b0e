"""The schedule: the ``retention:`` section as a whole, the series of a type, `parse_retention`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from city.errors import ConfigError
from city.retention.series import Series, type_matches


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
