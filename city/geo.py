"""Jurisdiction layers and the index that answers "which zones contain this place?", exactly.

A layer is a GeoJSON file; each feature is a zone. Real GIS files are messy (MultiPolygons, holes,
legacy ``crs`` members, features without properties, slightly invalid rings), so loading repairs
what can be repaired and names what cannot.

Boundary semantics: a point on a border shared by two zones is inside both (``intersects``/covers,
not ``contains``, which drops points on edges and vertices). Layers that need a single owner apply
a tie-break on top (see `city.jurisdictions`).

The point index is an H3 cover of every zone. Each zone is grown by `MARGIN_DEG` and covered with
``h3shape_to_cells_experimental(..., 'overlap')``; a cell whose polygon, grown by the same margin,
lies inside the zone is *interior* and answers without geometry; every other covered cell is
*boundary* and gets an exact ``shapely.intersects_xy`` against the prepared zone. A point whose
cell is in no zone's cover is in no zone. h3's overlap test misses a cell whose centre lies in a
hole wholly inside the cell; the cover adds such cells (see `_ring_cells`). The margin absorbs
the difference between H3's geodesic cell edges and planar lon/lat edges (nanometres at
resolutions 8-12) and floating-point noise.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h3
import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import make_valid

try:  # optional: bulk lat/lon -> cell (~1.5x a loop over h3) and cell polygons (~3x)
    from h3ronpy.vector import cells_to_wkb_polygons as _h3ronpy_polygons
    from h3ronpy.vector import coordinates_to_cells as _h3ronpy_cells
except ImportError:  # pragma: no cover - exercised only where h3ronpy is not installed
    _h3ronpy_cells = None
    _h3ronpy_polygons = None

#: ~1 cm at Seattle's latitude: far above float noise and geodesic/planar edge differences,
#: far below any real boundary's precision.
MARGIN_DEG = 1e-7
#: CRS names that mean "WGS84 longitude/latitude", the only coordinates we accept.
_LONLAT_CRS = {
    "urn:ogc:def:crs:OGC:1.3:CRS84",
    "urn:ogc:def:crs:OGC::CRS84",
    "urn:ogc:def:crs:EPSG::4326",
    "EPSG:4326",
    "CRS84",
}
_EARTH_RADIUS_M = 6_371_008.8


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


def circle(lat: float, lon: float, radius_m: float, quad_segs: int = 32) -> BaseGeometry:
    """A circle of `radius_m` metres around a point, as a lon/lat polygon.

    Built in a local equirectangular frame (exact enough for city-scale radii: the polygon is
    inscribed with 4*quad_segs sides, radial error < 0.03 % of the radius at the default).
    """
    if radius_m <= 0:
        raise ValueError(f"radius must be positive metres, got {radius_m}")
    dlat = math.degrees(radius_m / _EARTH_RADIUS_M)
    scale = math.cos(math.radians(lat))
    unit = shapely.Point(0.0, 0.0).buffer(1.0, quad_segs=quad_segs)
    return affinity.affine_transform(unit, [dlat / scale, 0, 0, dlat, lon, lat])


def area_m2(geometry: BaseGeometry) -> float:
    """Approximate area in square metres (local equal-area scaling at the centroid's latitude)."""
    if geometry.is_empty:
        return 0.0
    lat = geometry.centroid.y
    k = math.radians(1.0) * _EARTH_RADIUS_M
    return float(geometry.area * k * k * math.cos(math.radians(lat)))


# --- H3 cells -------------------------------------------------------------------------------

_RES_SHIFT = np.uint64(52)
_RES_MASK = np.uint64(0xF) << _RES_SHIFT


def cells_for(lats: np.ndarray, lons: np.ndarray, resolution: int) -> np.ndarray:
    """H3 cells (uint64) of many points; uses h3ronpy's bulk call when installed."""
    if _h3ronpy_cells is not None and len(lats):
        return _cells_h3ronpy(lats, lons, resolution)
    return _cells_h3(lats, lons, resolution)


def _cells_h3ronpy(lats: np.ndarray, lons: np.ndarray, resolution: int) -> np.ndarray:
    assert _h3ronpy_cells is not None
    return np.asarray(_h3ronpy_cells(lats, lons, resolution), dtype=np.uint64)


def _cells_h3(lats: np.ndarray, lons: np.ndarray, resolution: int) -> np.ndarray:
    to_cell = h3.api.basic_int.latlng_to_cell
    out = [to_cell(a, o, resolution) for a, o in zip(lats.tolist(), lons.tolist(), strict=True)]
    return np.array(out, dtype=np.uint64)


def cells_to_resolution(cells: np.ndarray, resolution: int) -> np.ndarray:
    """Parents at `resolution` of cells at that resolution or finer; 0 where not derivable.

    Pure bit arithmetic on the H3 index layout (resolution in bits 52-55, one 3-bit digit per
    finer resolution, unused digits set to 7), so a batch of producer-supplied cells costs
    nanoseconds each. Cells coarser than `resolution` (and 0, "unknown") come back as 0.
    """
    cells = np.asarray(cells, dtype=np.uint64)
    res = ((cells & _RES_MASK) >> _RES_SHIFT).astype(np.int64)
    unused = 0
    for r in range(resolution + 1, 16):
        unused |= 7 << (3 * (15 - r))
    parent = (cells & ~_RES_MASK) | (np.uint64(resolution) << _RES_SHIFT) | np.uint64(unused)
    return np.where((cells != 0) & (res >= resolution), parent, np.uint64(0))


def parse_cells(cells: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Cells as uint64 from ints or hex strings; None/''/0 mean "unknown, compute from lat/lon"."""
    if isinstance(cells, np.ndarray) and cells.dtype.kind in "ui":
        return cells.astype(np.uint64)
    out = np.zeros(len(cells), dtype=np.uint64)
    for i, cell in enumerate(cells):
        if cell is None or cell == "" or cell == 0:
            continue
        try:
            value = int(cell, 16) if isinstance(cell, str) else int(cell)
            valid = h3.api.basic_int.is_valid_cell(value)
        except (ValueError, TypeError, OverflowError):
            valid = False
        if not valid:
            raise ValueError(f"cells[{i}]: {cell!r} is not a valid H3 cell")
        out[i] = value
    return out


def _cell_polygons(cells: np.ndarray) -> np.ndarray:
    """Cell outlines as lon/lat polygons (vectorised through h3ronpy when installed)."""
    if _h3ronpy_polygons is not None and len(cells):
        wkb = _h3ronpy_polygons(cells).to_pylist()
        return shapely.from_wkb(np.array(wkb, dtype=object))
    return _cell_polygons_h3(cells)


def _cell_polygons_h3(cells: np.ndarray) -> np.ndarray:
    boundary = h3.api.basic_int.cell_to_boundary
    rings = [[(lon, lat) for lat, lon in boundary(int(c))] for c in cells]
    return shapely.polygons(rings) if rings else np.empty(0, dtype=object)


def _cover(geometry: BaseGeometry, resolution: int) -> np.ndarray:
    """Cells overlapping the zone grown by the margin (a superset is fine: extra cells are
    boundary cells whose exact check says no).

    h3's overlap search costs time per polygon vertex, so it runs on a simplified outer hull:
    the zone grown by a quarter cell edge, simplified within an eighth; checked to still cover
    the zone (else the plain grown zone is used). The cells that search misses around rings
    lying inside one cell (`_ring_cells`) are added when they overlap the grown zone.
    """
    grown = geometry.buffer(MARGIN_DEG)
    step = h3.average_hexagon_edge_length(resolution, unit="m") / 111_000 / 4
    hull = grown.buffer(step).simplify(step / 2)
    smaller = shapely.get_num_coordinates(hull) < shapely.get_num_coordinates(grown)
    hull = hull if smaller and hull.covers(grown) else grown
    h3shape = h3.geo_to_h3shape(mapping(hull))
    found = h3.api.basic_int.h3shape_to_cells_experimental(h3shape, resolution, contain="overlap")
    cells = np.unique(np.array(found, dtype=np.uint64))
    maybe = np.setdiff1d(_ring_cells(hull, resolution), cells)
    missed = maybe[shapely.intersects(grown, _cell_polygons(maybe))]
    return np.union1d(cells, missed)


def _ring_cells(polygonal: BaseGeometry, resolution: int) -> np.ndarray:
    """The cell of one vertex of every ring and its neighbours: where h3's overlap test misses.

    h3 keeps a cell when its centre is in the polygon, the outer ring's first vertex is in it,
    or its outline crosses a ring. A hole lying wholly inside a cell around the cell's centre
    passes none of these, so the cell is dropped although the polygon fills the rest of it
    (the hull's growth shrinks holes, so any hole under a cell wide can end up so). A ring
    wholly inside a cell contains each of its vertices; the vertex's cell and its neighbours
    include that cell even where h3 puts the vertex in the next cell (geodesic vs planar
    edges). `_cover` keeps those of them that overlap the zone.
    """
    rings = shapely.get_rings(shapely.get_parts(polygonal))
    first = shapely.get_point(rings, 0)
    disk = h3.api.basic_int.grid_disk
    to_cell = h3.api.basic_int.latlng_to_cell
    lats, lons = shapely.get_y(first).tolist(), shapely.get_x(first).tolist()
    out = [c for a, o in zip(lats, lons, strict=True) for c in disk(to_cell(a, o, resolution), 1)]
    return np.array(out, dtype=np.uint64)


def _zone_cells(geometry: BaseGeometry, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """A zone's covering cells and, for each, whether it is interior (no exact check needed)."""
    cells = _cover(geometry, resolution)
    shrunk = geometry.buffer(-MARGIN_DEG)
    shapely.prepare(shrunk)
    return cells, shapely.covers(shrunk, _cell_polygons(cells)).astype(bool)


# --- the index ------------------------------------------------------------------------------


class JurisdictionIndex:
    """Answers which zones contain or touch a point, a line or an area.

    Zones are addressed by their position in `zones`; answers are ascending tuples of positions.
    Geometry is prepared once at build time; points go through the H3 cell table and only
    points in boundary cells pay for an exact geometric check.
    """

    def __init__(self, zones: Sequence[Zone], resolution: int = 10):
        if not 0 <= resolution <= 15:
            raise ValueError(f"H3 resolution must be 0..15, got {resolution}")
        started = time.perf_counter()
        covers = [_zone_cells(zone.geometry, resolution) for zone in zones]
        self._setup(tuple(zones), resolution, covers)
        self.build_seconds = time.perf_counter() - started

    @classmethod
    def combine(cls, indexes: Sequence[JurisdictionIndex]) -> JurisdictionIndex:
        """One index over the zones of several (same resolution), reusing their cell covers.

        Positions follow `indexes` order: the zones of the first, then the second's, ...
        Costs a table merge, not a rebuild: the router combines per-layer versions this way.
        """
        resolutions = {i.resolution for i in indexes}
        if len(resolutions) != 1:
            raise ValueError(f"cannot combine indexes of resolutions {sorted(resolutions)}")
        started = time.perf_counter()
        self = cls.__new__(cls)
        zones = tuple(z for i in indexes for z in i.zones)
        self._setup(zones, resolutions.pop(), [c for i in indexes for c in i._covers])
        self.build_seconds = time.perf_counter() - started
        return self

    def _setup(
        self, zones: tuple[Zone, ...], resolution: int, covers: list[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        self.zones = zones
        self.resolution = resolution
        self._covers = covers
        self._geoms = np.array([z.geometry for z in self.zones], dtype=object)
        shapely.prepare(self._geoms)
        self._tree = shapely.STRtree(self._geoms)
        self._build_table()

    def _build_table(self) -> None:
        covers = self._covers
        cells = np.concatenate([c for c, _ in covers]) if covers else np.empty(0, np.uint64)
        inside = np.concatenate([i for _, i in covers]) if covers else np.empty(0, bool)
        zone_of = np.repeat(np.arange(len(covers), dtype=np.int32), [len(c) for c, _ in covers])
        order = np.lexsort((zone_of, cells))
        cells, zone_of, inside = cells[order], zone_of[order], inside[order]
        unique, starts = np.unique(cells, return_index=True)
        ends = np.append(starts[1:], len(cells))[: len(starts)]
        # A signature is one (interior zones, boundary zones) combination; cells share them.
        signatures: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {((), ()): 0}
        cell_sig = np.empty(len(unique), dtype=np.int32)
        zl, il = zone_of.tolist(), inside.tolist()
        for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            key = (
                tuple(zl[j] for j in range(a, b) if il[j]),
                tuple(zl[j] for j in range(a, b) if not il[j]),
            )
            cell_sig[k] = signatures.setdefault(key, len(signatures))
        self._cells = unique
        self._cell_sig = cell_sig
        keys = list(signatures)
        self._sig_interior = np.empty(len(keys), dtype=object)
        self._sig_interior[:] = [k[0] for k in keys]
        self._sig_n_interior = np.array([len(k[0]) for k in keys], dtype=np.int64)
        self._sig_n_boundary = np.array([len(k[1]) for k in keys], dtype=np.int64)
        self._sig_b_start = np.concatenate(([0], np.cumsum(self._sig_n_boundary)[:-1]))
        self._sig_i_start = np.concatenate(([0], np.cumsum(self._sig_n_interior)[:-1]))
        self._sig_b_zones = np.array([z for k in keys for z in k[1]], dtype=np.int64)
        self._sig_i_zones = np.array([z for k in keys for z in k[0]], dtype=np.int64)
        self.interior_cells = int(np.count_nonzero(self._sig_n_boundary[cell_sig] == 0))

    # -- points ---------------------------------------------------------------------------

    def locate(self, lat: float, lon: float) -> tuple[int, ...]:
        """Positions of the zones containing or touching the point, ascending."""
        return self.locate_many([lat], [lon])[0]

    def locate_many(
        self,
        lats: Sequence[float] | np.ndarray,
        lons: Sequence[float] | np.ndarray,
        cells: Sequence[Any] | np.ndarray | None = None,
    ) -> list[tuple[int, ...]]:
        """`locate` for a batch of points.

        `cells` optionally carries each point's H3 cell (int or hex string, at this index's
        resolution or finer; None/0 where unknown): those points skip the cell computation. A
        supplied cell is trusted to be the point's own cell.
        """
        lat = np.ascontiguousarray(lats, dtype=np.float64)
        lon = np.ascontiguousarray(lons, dtype=np.float64)
        if lat.shape != lon.shape or lat.ndim != 1:
            raise ValueError(f"lats and lons must be 1-D and equal length: {lat.shape} {lon.shape}")
        bad = ~(np.isfinite(lat) & np.isfinite(lon)) | (np.abs(lat) > 90) | (np.abs(lon) > 180)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"point {i}: ({lat[i]}, {lon[i]}) is not a lat/lon position")
        sig = self._signatures(lat, lon, cells)
        out = self._sig_interior[sig]
        need = np.flatnonzero(self._sig_n_boundary[sig])
        if len(need):
            out[need] = self._exact(lat, lon, sig, need)
        return out.tolist()  # type: ignore[no-any-return]

    def _signatures(self, lat: np.ndarray, lon: np.ndarray, cells: Any) -> np.ndarray:
        if cells is None:
            cell = cells_for(lat, lon, self.resolution)
        else:
            given = parse_cells(cells)
            if given.shape != lat.shape:
                raise ValueError(f"cells must match the points: {given.shape} vs {lat.shape}")
            cell = cells_to_resolution(given, self.resolution)
            missing = np.flatnonzero(cell == 0)
            if len(missing):
                cell[missing] = cells_for(lat[missing], lon[missing], self.resolution)
        if not len(self._cells):
            return np.zeros(len(cell), dtype=np.int32)
        pos = np.searchsorted(self._cells, cell)
        np.minimum(pos, len(self._cells) - 1, out=pos)
        return np.where(self._cells[pos] == cell, self._cell_sig[pos], 0)

    def _exact(
        self, lat: np.ndarray, lon: np.ndarray, sig: np.ndarray, need: np.ndarray
    ) -> list[tuple[int, ...]]:
        """Answers for points in boundary cells: interior zones plus exact-checked candidates."""
        s = sig[need]
        p_b, z_b = _expand(need, s, self._sig_b_start, self._sig_n_boundary, self._sig_b_zones)
        order = np.argsort(z_b, kind="stable")
        p_b, z_b = p_b[order], z_b[order]
        hit = np.zeros(len(p_b), dtype=bool)
        bounds = np.flatnonzero(np.diff(z_b)) + 1
        for a, b in zip(
            np.concatenate(([0], bounds)).tolist(),
            np.append(bounds, len(z_b)).tolist(),
            strict=True,
        ):
            pts = p_b[a:b]
            hit[a:b] = shapely.intersects_xy(self._geoms[z_b[a]], lon[pts], lat[pts])
        p_i, z_i = _expand(need, s, self._sig_i_start, self._sig_n_interior, self._sig_i_zones)
        points = np.concatenate((p_i, p_b[hit]))
        zones = np.concatenate((z_i, z_b[hit]))
        order = np.lexsort((zones, points))
        points, zones = points[order], zones[order]
        # Split the sorted (point, zone) pairs back into one tuple per point.
        where = np.searchsorted(points, need)
        ends = np.append(where[1:], len(points))
        zl = zones.tolist()
        return [tuple(zl[a:b]) for a, b in zip(where.tolist(), ends.tolist(), strict=True)]

    # -- lines and areas ------------------------------------------------------------------

    def intersecting(self, geometry: BaseGeometry) -> tuple[int, ...]:
        """Positions of the zones a point, line or area intersects, ascending (STRtree query)."""
        hits = self._tree.query(geometry, predicate="intersects")
        return tuple(sorted(int(h) for h in hits))

    # -- reporting ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Size and build cost, for the benchmark and `jurisdictions show`."""
        table = (
            self._cells.nbytes
            + self._cell_sig.nbytes
            + self._sig_b_zones.nbytes
            + self._sig_i_zones.nbytes
            + 5 * 8 * len(self._sig_interior)
        )
        coords = int(shapely.get_num_coordinates(self._geoms).sum()) if len(self._geoms) else 0
        return {
            "zones": len(self.zones),
            "resolution": self.resolution,
            "cells": len(self._cells),
            "interior_cells": self.interior_cells,
            "boundary_cells": len(self._cells) - self.interior_cells,
            "signatures": len(self._sig_interior),
            "cell_table_bytes": int(table),
            "geometry_coordinates": coords,
            "build_seconds": round(self.build_seconds, 4),
        }


def _expand(
    points: np.ndarray, sig: np.ndarray, start: np.ndarray, count: np.ndarray, flat: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(point, zone) pairs for each point's signature list (a CSR expansion, no Python loop)."""
    n = count[sig]
    total = int(n.sum())
    rep_points = np.repeat(points, n)
    first = np.repeat(start[sig] - (np.cumsum(n) - n), n)
    return rep_points, flat[first + np.arange(total)]
