"""A zone's H3 cover: the cells that overlap it, each marked interior or boundary.

Each zone is grown by `MARGIN_DEG` and covered with
``h3shape_to_cells_experimental(..., 'overlap')``; a cell whose polygon, grown by the same margin,
lies inside the zone is *interior* and answers without geometry; every other covered cell is
*boundary* and gets an exact check in the index (`city.geo.index`). h3's overlap test misses a
cell whose centre lies in a hole wholly inside the cell; the cover adds such cells (see
`_ring_cells`). The margin absorbs the difference between H3's geodesic cell edges and planar
lon/lat edges (nanometres at resolutions 8-12) and floating-point noise.
"""

from __future__ import annotations

import h3
import numpy as np
import shapely
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from city.geo.cells import _cell_polygons

#: ~1 cm at Seattle's latitude: far above float noise and geodesic/planar edge differences,
#: far below any real boundary's precision.
MARGIN_DEG = 1e-7


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
