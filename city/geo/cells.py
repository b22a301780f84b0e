"""H3 cells of points, fast: bulk lat/lon -> cell, producer-supplied cells, cell outlines.

Uses h3ronpy's vectorised calls when it is installed and falls back to a loop over h3 otherwise;
both give the same cells (a test and bench/geo.py compare them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import h3
import numpy as np
import shapely

try:  # optional: bulk lat/lon -> cell (~1.5x a loop over h3) and cell polygons (~3x)
    from h3ronpy.vector import cells_to_wkb_polygons as _h3ronpy_polygons
    from h3ronpy.vector import coordinates_to_cells as _h3ronpy_cells
except ImportError:  # pragma: no cover - exercised only where h3ronpy is not installed
    _h3ronpy_cells = None
    _h3ronpy_polygons = None

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
