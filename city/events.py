"""The event envelope: CloudEvents 1.0 attributes plus the city's extensions.

Every event that crosses cityrelay is one `Event`. The envelope is validated once, at ingest;
after that the pipeline passes the normalised JSON form (`Event.to_wire`) between processes so
no later hop pays for validation again.

City extensions (CloudEvents extension attributes, lower-case alphanumeric names):
- ``priority``: emergency > high > routine > bulk (`Priority`).
- ``location``: where the event is: a point ``{"lat": .., "lon": ..}`` or a GeoJSON geometry.
- ``department``: the producing department; must match the stream the event arrived on.
- ``h3cell``: the H3 cell of a point location, when the producer already knows it.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from shapely.errors import ShapelyError
from shapely.geometry import shape
from shapely.validation import explain_validity

SPEC_VERSION: Literal["1.0"] = "1.0"
EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_EVENT_BYTES = 64 * 1024


class Priority(StrEnum):
    """How urgently an event must travel. Lower `rank` is more urgent."""

    EMERGENCY = "emergency"
    HIGH = "high"
    ROUTINE = "routine"
    BULK = "bulk"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {Priority.EMERGENCY: 0, Priority.HIGH: 1, Priority.ROUTINE: 2, Priority.BULK: 3}


class PointLocation(BaseModel):
    """A WGS84 point. NaN, infinities and out-of-range values are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lat: float = Field(ge=-90.0, le=90.0, allow_inf_nan=False)
    lon: float = Field(ge=-180.0, le=180.0, allow_inf_nan=False)


GEOMETRY_TYPES = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
)


class GeometryLocation(BaseModel):
    """A GeoJSON geometry (a road closure line, a flood polygon...), coordinates lon/lat."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"]
    coordinates: Any

    @model_validator(mode="after")
    def _coordinates_are_finite_and_in_range(self) -> GeometryLocation:
        _check_positions(self.coordinates, depth=0)
        try:
            geometry = shape({"type": self.type, "coordinates": self.coordinates})
        except (ValueError, TypeError, IndexError, AttributeError, ShapelyError) as exc:
            raise ValueError(f"not a valid {self.type}: {exc}") from None
        # A self-intersecting area has no well-defined inside: refuse it rather than guess.
        # Parts of a MultiPolygon may overlap (several alert areas): each part is checked alone.
        parts = geometry.geoms if self.type == "MultiPolygon" else [geometry]
        for part in parts:
            if not part.is_valid:
                raise ValueError(f"invalid {self.type}: {explain_validity(part)}")
        return self


def _check_positions(value: Any, depth: int) -> None:
    if depth > 4:
        raise ValueError("coordinates are nested too deeply for a GeoJSON geometry")
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        if len(value) < 2:
            raise ValueError("a position needs longitude and latitude")
        lon, lat = float(value[0]), float(value[1])
        if not (math.isfinite(lon) and math.isfinite(lat)):
            raise ValueError("coordinates must be finite numbers")
        if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
            raise ValueError(f"position {value[:2]} is outside longitude/latitude range")
        return
    if not isinstance(value, list) or not value:
        raise ValueError("coordinates must be non-empty arrays of [lon, lat] positions")
    for item in value:
        _check_positions(item, depth + 1)


Location = PointLocation | GeometryLocation


class Event(BaseModel):
    """One CloudEvents 1.0 event with the city's extensions.

    Unknown extension attributes are kept (CloudEvents allows them) but must have valid
    extension names and primitive values.
    """

    model_config = ConfigDict(extra="allow", frozen=False)

    id: str = Field(min_length=1, max_length=128)
    source: str = Field(min_length=1, max_length=256)
    specversion: Literal["1.0"] = SPEC_VERSION
    type: str = Field(min_length=3, max_length=128)
    time: datetime
    subject: str | None = Field(default=None, max_length=256)
    datacontenttype: str = "application/json"
    dataschema: str | None = None
    data: dict[str, Any] | None = None
    priority: Priority | None = None
    location: Location | None = None
    department: str | None = Field(default=None, max_length=64)
    h3cell: str | None = Field(default=None, max_length=16)

    @field_validator("type")
    @classmethod
    def _type_is_reverse_dns_like(cls, value: str) -> str:
        if not EVENT_TYPE.match(value):
            raise ValueError("event type must be dotted lower-case words, e.g. 'traffic.incident'")
        return value

    @field_validator("time")
    @classmethod
    def _time_is_aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time must carry a timezone (RFC 3339, e.g. 2026-11-25T10:00:00Z)")
        try:
            return value.astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:59:59-12:00: a ValueError makes it a refusal
            raise ValueError("time is outside the representable range once in UTC") from None

    @model_validator(mode="after")
    def _extensions_are_valid(self) -> Event:
        for name, value in (self.model_extra or {}).items():
            if not EXTENSION_NAME.match(name):
                raise ValueError(
                    f"extension attribute {name!r}: names are 1-20 lower-case letters or digits"
                )
            if not isinstance(value, str | int | bool) or isinstance(value, float):
                raise ValueError(f"extension attribute {name!r} must be a string, integer or bool")
        return self

    @classmethod
    def new(
        cls,
        type: str,
        source: str,
        data: dict[str, Any] | None = None,
        **attributes: Any,
    ) -> Event:
        """Build an event, filling `id` and `time` the way a producer should."""
        attributes.setdefault("id", new_event_id())
        attributes.setdefault("time", datetime.now(UTC))
        return cls(type=type, source=source, data=data, **attributes)

    def point(self) -> tuple[float, float] | None:
        """The (lat, lon) of a point location, else None."""
        loc = self.location
        if isinstance(loc, PointLocation):
            return loc.lat, loc.lon
        if isinstance(loc, GeometryLocation) and loc.type == "Point":
            lon, lat = loc.coordinates[:2]
            return float(lat), float(lon)
        return None

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready normalised form passed between processes (None values left out)."""
        return self.model_dump(mode="json", exclude_none=True)


def new_event_id() -> str:
    """A fresh, globally unique event id."""
    return uuid.uuid4().hex


def source_for(department: str) -> str:
    """The CloudEvents `source` URI-reference a department's events carry."""
    return f"/city/{department}"
