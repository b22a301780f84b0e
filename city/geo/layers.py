"""Jurisdiction layers: a GeoJSON file read into zones, repaired where it can be.

A layer is a GeoJSON file; each feature is a zone. Real GIS files are messy (MultiPolygons, holes,
legacy ``crs`` members, features without properties, slightly invalid rings), so loading repairs
what can be repaired and names what cannot.

Boundary semantics: a point on a border shared by two zones is inside both (``intersects``/covers,
not ``contains``, which drops points on edges and vertices). Layers that need a single owner apply
a tie-break on top (see `city.geo.tiebreak`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import make_valid

#: CRS names that mean "WGS84 longitude/latitude", the only coordinates we accept.
_LONLAT_CRS = {
    "urn:ogc:def:crs:OGC:1.3:CRS84",
    "urn:ogc:def:crs:OGC::CRS84",
    "urn:ogc:def:crs:EPSG::4326",
    "EPSG:4326",
    "CRS84",
}


class LayerError(ValueError):
    """A layer file that cannot be used, with the file and the feature at fault."""


@dataclass(frozen=True)
class Zone:
    """One feature of one layer: the unit a department's jurisdiction is made of."""

    layer: str
    index: int
    name: str
    geometry: BaseGeometry
    repaired: bool = False  # the file's geometry was invalid and make_valid fixed it

    @property
    def ref(self) -> str:
        """Stable reference used in explanations: ``layer#index``."""
        return f"{self.layer}#{self.index}"


def load_layer(layer: str, path: str | Path, name_property: str | None = None) -> list[Zone]:
    """Read a GeoJSON FeatureCollection file into zones (see `parse_layer`)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise LayerError(f"{file}: cannot read GeoJSON: {exc}") from None
    return parse_layer(layer, text, name_property, source=str(file))


def parse_layer(
    layer: str, text: str | bytes, name_property: str | None = None, source: str = "<geojson>"
) -> list[Zone]:
    """Parse GeoJSON text into zones; invalid geometry is repaired with make_valid.

    Zones keep their 0-based position in ``features`` as `Zone.index`, so ``layer#i`` names the
    same feature the GIS officer sees in the file.
    """
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise LayerError(f"{source}: cannot read GeoJSON: {exc}") from None
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(features, list):
        raise LayerError(f"{source}: not a GeoJSON FeatureCollection (no 'features' array)")
    _check_crs(source, doc.get("crs"))
    return [_zone_from_feature(layer, source, i, f, name_property) for i, f in enumerate(features)]


def _check_crs(source: str, crs: Any) -> None:
    """Accept no ``crs`` (RFC 7946) or a legacy one naming WGS84 lon/lat; refuse anything else."""
    if crs is None:
        return
    name = crs.get("properties", {}).get("name") if isinstance(crs, dict) else None
    if name not in _LONLAT_CRS:
        raise LayerError(
            f"{source}: crs {name or crs!r} is not WGS84 longitude/latitude; reproject the file "
            "to EPSG:4326 first (e.g. ogr2ogr -t_srs EPSG:4326)"
        )


def _zone_from_feature(
    layer: str, source: str, i: int, feature: Any, name_property: str | None
) -> Zone:
    if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict):
        raise LayerError(f"{source}: features[{i}]: has no geometry")
    try:
        geometry = shape(feature["geometry"])
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise LayerError(f"{source}: features[{i}].geometry: {exc}") from None
    if geometry.is_empty:
        raise LayerError(f"{source}: features[{i}].geometry: is empty")
    if geometry.geom_type not in ("Polygon", "MultiPolygon"):
        raise LayerError(
            f"{source}: features[{i}].geometry: a jurisdiction must be a Polygon or "
            f"MultiPolygon, not {geometry.geom_type}"
        )
    minx, miny, maxx, maxy = geometry.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise LayerError(
            f"{source}: features[{i}].geometry: coordinates outside lon/lat range "
            "(projected coordinates? reproject to EPSG:4326)"
        )
    repaired = not geometry.is_valid
    if repaired:
        geometry = _polygonal(make_valid(geometry))
    properties = feature.get("properties") or {}
    if name_property is not None:
        if name_property not in properties:
            raise LayerError(f"{source}: features[{i}].properties: no {name_property!r} property")
        name = str(properties[name_property])
    else:
        name = f"#{i}"
    return Zone(layer=layer, index=i, name=name, geometry=geometry, repaired=repaired)


def _polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """The areal part of a repaired geometry (make_valid may leave collapsed slivers as lines)."""
    parts = shapely.get_parts(geometry)
    polys = [p for p in parts if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(polys) if len(polys) != 1 else polys[0]
