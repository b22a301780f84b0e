"""Geospatial routing throughput on the real Seattle layers: H3 index vs STRtree vs brute force.

All six layers go into one index (99 zones, overlapping), as the router uses them. Points are
uniform in the city limits' bounding box. Every configuration's answers are compared with brute
force (vectorised shapely `intersects_xy` per zone); `exact` is true only if all agree.

Prints progress lines, then (last line) one JSON object with the contract keys
``points_per_s``, ``resolution``, ``strtree_points_per_s``, ``exact``.

    python bench/geo.py [--points 1000000] [--resolutions 9,10,11]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from city.geo import (  # noqa: E402
    BEGINNING,
    JurisdictionIndex,
    Jurisdictions,
    LayerVersion,
    TieBreak,
    load_layer,
)
from city.geo import cells as geo_cells  # noqa: E402

DATA_CANDIDATES = [
    Path(__file__).resolve().parents[2] / "shared" / "data" / "seattle",
    Path("/work/shared/data/seattle"),
]


def best_of(fn, repeat: int = 3) -> tuple[float, Any]:  # noqa: ANN001
    best, out = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--resolutions", default="9,10,11")
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    data = args.data or next(p for p in DATA_CANDIDATES if p.exists())
    files = sorted(data.glob("*.geojson"))
    zones = [z for f in files for z in load_layer(f.stem, f)]
    limits = [z.geometry for z in zones if z.layer == "city-limits"]
    minx, miny, maxx, maxy = shapely.total_bounds(limits)
    rng = np.random.default_rng(42)
    n = args.points
    lats, lons = rng.uniform(miny, maxy, n), rng.uniform(minx, maxx, n)
    print(
        f"{len(zones)} zones from {data}; {n} points in {minx:.3f},{miny:.3f},{maxx:.3f},{maxy:.3f}"
    )

    # Brute force: the reference answer, and the slowest baseline.
    geoms = np.array([z.geometry for z in zones], dtype=object)
    shapely.prepare(geoms)

    def brute() -> list[tuple[int, ...]]:
        hits = np.zeros((n, len(zones)), dtype=bool)
        for j, g in enumerate(geoms):
            hits[:, j] = shapely.intersects_xy(g, lons, lats)
        return [tuple(np.flatnonzero(r).tolist()) for r in hits]

    brute_s, expected = best_of(brute, 1)
    print(f"brute force: {n / brute_s:,.0f} points/s")

    # STRtree baseline: the polygons in a tree, queried with the points in bulk.
    tree = shapely.STRtree(geoms)
    m = min(n, 200_000)
    pts = shapely.points(lons[:m], lats[:m])

    def strtree() -> list[tuple[int, ...]]:
        p, z = tree.query(pts, predicate="intersects")
        order = np.lexsort((z, p))
        p, z = p[order], z[order]
        starts = np.searchsorted(p, np.arange(m))
        ends = np.append(starts[1:], len(p))
        zl = z.tolist()
        return [tuple(zl[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]

    strtree_s, strtree_out = best_of(strtree, 1)
    strtree_pps = m / strtree_s
    exact = strtree_out == expected[:m]
    print(f"strtree: {strtree_pps:,.0f} points/s (exact={exact})")

    # Cell computation alone: what h3ronpy buys.
    cells_loop_s, _ = best_of(lambda: geo_cells._cells_h3(lats[:m], lons[:m], 10), 1)
    cells = {"h3_loop_points_per_s": round(m / cells_loop_s)}
    if geo_cells._h3ronpy_cells is not None:
        bulk_s, _ = best_of(lambda: geo_cells._cells_h3ronpy(lats, lons, 10))
        cells["h3ronpy_points_per_s"] = round(n / bulk_s)
    print(f"cells: {cells}")

    per_res = {}
    for res in [int(r) for r in args.resolutions.split(",")]:
        index = JurisdictionIndex(zones, res)
        stats = index.stats()
        seconds, got = best_of(lambda index=index: index.locate_many(lats, lons))
        ok = got == expected
        exact = exact and ok
        sig = index._signatures(lats, lons, None)
        boundary_share = float(np.count_nonzero(index._sig_n_boundary[sig]) / n)
        precomputed = geo_cells.cells_for(lats, lons, res)
        with_cells_s, got_cells = best_of(
            lambda index=index, pre=precomputed: index.locate_many(lats, lons, cells=pre)
        )
        exact = exact and got_cells == expected
        per_res[res] = {
            "points_per_s": round(n / seconds),
            "points_per_s_with_cells": round(n / with_cells_s),
            "exact": ok,
            "boundary_check_share": round(boundary_share, 4),
            "build_seconds": stats["build_seconds"],
            "cell_table_bytes": stats["cell_table_bytes"],
            "geometry_bytes": stats["geometry_coordinates"] * 16,
            "cells": stats["cells"],
            "interior_cells": stats["interior_cells"],
            "vs_strtree": round(n / seconds / strtree_pps, 1),
            "vs_brute_force": round(n / seconds / (n / brute_s), 1),
        }
        print(f"res {res}: {per_res[res]}")

    # The router's path: six versioned layers, each its own index, tie-break on precincts,
    # micro-batches of 500 points with event times.
    world = Jurisdictions(
        [LayerVersion(f.stem, 0, BEGINNING, tuple(load_layer(f.stem, f))) for f in files],
        resolution=10,
        exclusive={"spd-precincts": TieBreak()},
    )
    world.prepare()
    k = min(n, 100_000)
    now = np.full(k, time.time())

    def versioned() -> None:
        for a in range(0, k, 500):
            world.locate_batch(lats[a : a + 500], lons[a : a + 500], now[a : a + 500])

    versioned_s, _ = best_of(versioned, 1)
    print(f"versioned locate_batch (500/batch, res 10): {k / versioned_s:,.0f} points/s")

    best = max(per_res, key=lambda r: per_res[r]["points_per_s"] if per_res[r]["exact"] else 0)
    result = {
        "points_per_s": per_res[best]["points_per_s"],
        "resolution": best,
        "strtree_points_per_s": round(strtree_pps),
        "brute_force_points_per_s": round(n / brute_s),
        "exact": bool(exact),
        "speedup_vs_strtree": per_res[best]["vs_strtree"],
        "speedup_vs_brute_force": per_res[best]["vs_brute_force"],
        "points": n,
        "zones": len(zones),
        "cores": 1,
        "machine_cpus": os.cpu_count(),
        "versioned_batch500_points_per_s": round(k / versioned_s),
        "cell_backend": "h3ronpy" if geo_cells._h3ronpy_cells is not None else "h3",
        "cells": cells,
        "resolutions": per_res,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
