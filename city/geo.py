"""Jurisdiction layers and the index that answers "which zones contain this place?".

A layer is a GeoJSON file; each feature is a zone. Real GIS files are messy (MultiPolygons,
legacy ``crs`` members, features without properties, slightly invalid rings), so loading repairs
what can be repaired and names what cannot.

Boundary semantics: a point on a border shared by two zones is inside both (``intersects``,
not ``contains``, which drops points on edges and vertices).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import make_valid


class LayerError(ValueError):
    """A layer file that cannot be used, with the file and the feature at fault."""


@dataclass(frozen=True)
class Zone:
    """One feature of one layer: the unit a department's jurisdiction is made of."""

    layer: str
    index: int
    name: str
    geometry: BaseGeometry

    @property
    def ref(self) -> str:
        """Stable reference used in explanations: ``layer#index``."""
        return f"{self.layer}#{self.index}"


def load_layer(layer: str, path: str | Path, name_property: str | None = None) -> list[Zone]:
    """Read a GeoJSON FeatureCollection into zones; invalid geometry is repaired with make_valid."""
    file = Path(path)
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LayerError(f"{file}: cannot read GeoJSON: {exc}") from None
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(features, list):
        raise LayerError(f"{file}: not a GeoJSON FeatureCollection (no 'features' array)")
    zones: list[Zone] = []
    for i, feature in enumerate(features):
        zones.append(_zone_from_feature(layer, file, i, feature, name_property))
    return zones


def _zone_from_feature(
    layer: str, file: Path, i: int, feature: Any, name_property: str | None
) -> Zone:
    if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict):
        raise LayerError(f"{file}: features[{i}]: has no geometry")
    try:
        geometry = shape(feature["geometry"])
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise LayerError(f"{file}: features[{i}].geometry: {exc}") from None
    if geometry.is_empty:
        raise LayerError(f"{file}: features[{i}].geometry: is empty")
    if not geometry.is_valid:
        geometry = make_valid(geometry)
    properties = feature.get("properties") or {}
    if name_property is not None:
        if name_property not in properties:
            raise LayerError(f"{file}: features[{i}].properties: no {name_property!r} property")
        name = str(properties[name_property])
    else:
        name = f"#{i}"
    return Zone(layer=layer, index=i, name=name, geometry=geometry)


class JurisdictionIndex:
    """Answers which zones contain or touch a point, a line or an area.

    Zones are addressed by their position in `zones`. Geometry is prepared once at build time.
    """

    def __init__(self, zones: Sequence[Zone], resolution: int = 10):
        self.zones: tuple[Zone, ...] = tuple(zones)
        self.resolution = resolution
        self._geoms = np.array([z.geometry for z in self.zones], dtype=object)
        for geom in self._geoms:
            shapely.prepare(geom)
        self._tree = shapely.STRtree(self._geoms)

    def locate(self, lat: float, lon: float) -> tuple[int, ...]:
        """Positions of the zones containing or touching the point, ascending."""
        hits = self._tree.query(shapely.Point(lon, lat), predicate="intersects")
        return tuple(sorted(int(h) for h in hits))

    def locate_many(self, lats: Sequence[float], lons: Sequence[float]) -> list[tuple[int, ...]]:
        """`locate` for a batch of points."""
        return [self.locate(lat, lon) for lat, lon in zip(lats, lons, strict=True)]

    def intersecting(self, geometry: BaseGeometry) -> tuple[int, ...]:
        """Positions of the zones a line or area intersects, ascending."""
        hits = self._tree.query(geometry, predicate="intersects")
        return tuple(sorted(int(h) for h in hits))
