"""The ``geo`` section of the city YAML: index resolution, exclusive layers, area subscriptions.

Validated by `parse_geo`, which the city config's parser calls (`city.config.parse_city`).
"""

from __future__ import annotations

from typing import Any, Literal

import shapely
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from city.geo.citylike import CityLike
from city.geo.measure import circle


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TieBreak(_Strict):
    """How an exclusive layer picks one owner for a point on a shared border.

    ``lowest_index``: the first feature in the file; ``name``: the smallest zone name;
    ``priority``: the first of `priority` (zone names) among the candidates, else lowest index.
    """

    rule: Literal["lowest_index", "name", "priority"] = "lowest_index"
    priority: list[str] = Field(default_factory=list)


class AreaSubscription(_Strict):
    """A department's interest in an area it draws itself, not in a jurisdiction layer.

    Either `geometry` (a GeoJSON Polygon/MultiPolygon, lon/lat) or `points` plus `radius_m`
    (e.g. traffic incidents within 200 m of a water utility's pumping stations).
    """

    id: str
    department: str
    types: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    purpose: str = "operations"
    filter: dict[str, Any] | None = None
    geometry: dict[str, Any] | None = None
    points: list[tuple[float, float]] | None = Field(default=None, description="[lat, lon] pairs")
    radius_m: float | None = Field(default=None, gt=0, le=100_000)

    @model_validator(mode="after")
    def _one_shape(self) -> AreaSubscription:
        if (self.geometry is None) == (self.points is None):
            raise ValueError("give either 'geometry' or 'points' with 'radius_m'")
        if self.points is not None and self.radius_m is None:
            raise ValueError("'points' needs 'radius_m' (metres)")
        if self.geometry is not None:
            try:
                geom = shape(self.geometry)
            except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
                raise ValueError(f"geometry: {exc}") from None
            if geom.geom_type not in ("Polygon", "MultiPolygon") or not geom.is_valid:
                raise ValueError("geometry must be a valid Polygon or MultiPolygon")
        for lat, lon in self.points or []:
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"point ({lat}, {lon}) is not [lat, lon]")
        return self

    def shape(self) -> BaseGeometry:
        """The area as one lon/lat geometry (circles as 128-gons)."""
        if self.geometry is not None:
            return shape(self.geometry)
        assert self.points is not None and self.radius_m is not None
        return shapely.union_all([circle(lat, lon, self.radius_m) for lat, lon in self.points])


class GeoConfig(_Strict):
    """The ``geo`` section of the city YAML."""

    resolution: int = Field(default=10, ge=5, le=13, description="H3 resolution of the index")
    exclusive: dict[str, TieBreak] = Field(
        default_factory=dict, description="layers that must have exactly one owner per point"
    )
    areas: list[AreaSubscription] = Field(default_factory=list)


def parse_geo(data: Any, city: CityLike | None = None, source: str = "<config>") -> GeoConfig:
    """Validate the ``geo`` section; with `city`, also check layer and department references."""
    from city.errors import ConfigError

    try:
        geo = GeoConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = [
            ("geo." + ".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()
        ]
        raise ConfigError(source, problems) from None
    problems = []
    if city is not None:
        for layer in geo.exclusive:
            if layer not in city.layers:
                problems.append((f"geo.exclusive.{layer}", "no such layer in 'layers'"))
        ids = set(city.department_ids)
        for i, area in enumerate(geo.areas):
            if area.department not in ids:
                problems.append((f"geo.areas[{i}].department", f"unknown {area.department!r}"))
    if problems:
        raise ConfigError(source, problems)
    return geo
