"""Durations of the retention schedule: ``30d``, ``6h``, ``7y`` (years as the law counts them)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w|y)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


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
