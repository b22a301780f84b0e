"""Property: for any polygons and points, the index answers exactly what shapely says.

Random small polygons (convex and concave, with holes and shared edges) at random resolutions,
with points drawn on their vertices, edges and near them, and in the cells around every vertex,
where the H3 shortcut is most likely to be wrong.
"""

from __future__ import annotations

import h3
import numpy as np
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

from city.geo import JurisdictionIndex, Zone

coord = st.floats(min_value=-0.002, max_value=0.002, allow_nan=False)
hole_coord = st.floats(min_value=-0.0004, max_value=0.0004, allow_nan=False)


def _areal(geometry: shapely.Geometry) -> shapely.Geometry:
    """The polygons of a geometry with area (make_valid and differences leave lines)."""
    parts = shapely.get_parts(shapely.make_valid(geometry))
    return shapely.union_all([p for p in parts if p.geom_type == "Polygon" and p.area > 0])


@st.composite
def layers(draw: st.DrawFn) -> list[Zone]:
    zones = []
    for i in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            pts = draw(st.lists(st.tuples(coord, coord), min_size=3, max_size=7, unique=True))
            poly = _areal(Polygon(pts))
        else:  # a square, so that the holes below fall inside
            poly = shapely.box(-0.002, -0.002, 0.002, 0.002)
        for _ in range(draw(st.integers(0, 3))):  # holes (or notches) up to a few cells wide
            cx, cy = draw(coord), draw(coord)
            ring = draw(st.lists(st.tuples(hole_coord, hole_coord), min_size=3, max_size=6))
            poly = _areal(poly.difference(_areal(Polygon([(cx + x, cy + y) for x, y in ring]))))
        if poly.is_empty:
            continue
        zones.append(Zone("p", i, str(i), poly))
    if not zones:  # every drawn polygon was degenerate
        zones.append(Zone("p", 0, "0", shapely.box(0, 0, 0.001, 0.001)))
    # a neighbour sharing an edge with the first zone
    minx, miny, maxx, maxy = zones[0].geometry.bounds
    zones.append(Zone("p", len(zones), "n", shapely.box(maxx, miny, maxx + 0.001, maxy)))
    return zones


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zones=layers(), resolution=st.integers(9, 12), seed=st.integers(0, 2**16))
def test_index_matches_brute_force_everywhere(
    zones: list[Zone], resolution: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    coords = np.concatenate(
        [shapely.get_coordinates(shapely.get_rings(shapely.get_parts(z.geometry))) for z in zones]
    )
    mids = (coords[1:] + coords[:-1]) / 2
    jitter = coords + rng.normal(0, 1e-6, coords.shape)
    anywhere = rng.uniform(-0.003, 0.003, (500, 2))
    # the centre and corners (pulled 10 % inwards) of the cells at and around every vertex
    near = []
    for cell in {
        c for x, y in coords for c in h3.grid_disk(h3.latlng_to_cell(y, x, resolution), 1)
    }:
        lat, lon = h3.cell_to_latlng(cell)
        near.append((lon, lat))
        near += [
            (lon + (b - lon) * 0.9, lat + (a - lat) * 0.9) for a, b in h3.cell_to_boundary(cell)
        ]
    pts = np.concatenate((coords, mids, jitter, anywhere, np.array(near)))
    index = JurisdictionIndex(zones, resolution)
    got = index.locate_many(pts[:, 1], pts[:, 0])
    hits = np.array([shapely.intersects(z.geometry, shapely.points(pts)) for z in zones]).T
    expected = [tuple(np.flatnonzero(row).tolist()) for row in hits]
    assert got == expected
