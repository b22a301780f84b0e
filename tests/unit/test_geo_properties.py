"""Property: for any polygons and points, the index answers exactly what shapely says.

Random small polygons (convex and concave, with shared edges) at random resolutions, with points
drawn on their vertices, edges and near them, where the H3 shortcut is most likely to be wrong.
"""

from __future__ import annotations

import numpy as np
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

from city.geo import JurisdictionIndex, Zone

coord = st.floats(min_value=-0.002, max_value=0.002, allow_nan=False)


@st.composite
def layers(draw: st.DrawFn) -> list[Zone]:
    zones = []
    for i in range(draw(st.integers(1, 4))):
        pts = draw(st.lists(st.tuples(coord, coord), min_size=3, max_size=7, unique=True))
        poly = shapely.make_valid(Polygon(pts))
        poly = shapely.union_all(
            [p for p in shapely.get_parts(poly) if p.geom_type == "Polygon" and p.area > 0]
        )
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
    pts = np.concatenate((coords, mids, jitter, anywhere))
    index = JurisdictionIndex(zones, resolution)
    got = index.locate_many(pts[:, 1], pts[:, 0])
    expected = [
        tuple(j for j, z in enumerate(zones) if z.geometry.intersects(shapely.Point(x, y)))
        for x, y in pts
    ]
    assert got == expected
