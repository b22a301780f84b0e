"""The index that answers "which zones contain this place?", exactly.

The point index is an H3 cover of every zone (`city.geo.cover`): a point whose cell is interior
to a zone answers without geometry, a point in a boundary cell gets an exact
``shapely.intersects_xy`` against the prepared zone, and a point whose cell is in no zone's cover
is in no zone. Lines and areas go through an STRtree.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from city.geo.cells import cells_for, cells_to_resolution, parse_cells
from city.geo.cover import _zone_cells
from city.geo.layers import Zone


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
