"""The jurisdiction index routes every point exactly as brute-force shapely `intersects` would."""

from __future__ import annotations

import json
from pathlib import Path

import h3
import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, Polygon, box, mapping

from city.geo import (
    JurisdictionIndex,
    LayerError,
    Zone,
    area_m2,
    cells_to_resolution,
    circle,
    load_layer,
    parse_cells,
    parse_layer,
)
from city.geo import cells as geo_cells

SEATTLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "seattle"
if not SEATTLE.exists():  # a worktree sits beside main; shared/ beside both
    SEATTLE = Path("/work/shared/data/seattle")
LAYERS = sorted(p.name for p in SEATTLE.glob("*.geojson"))


def brute_force(zones: list[Zone], lats: np.ndarray, lons: np.ndarray) -> list[tuple[int, ...]]:
    """The reference answer: shapely intersects of every point with every zone (vectorised;
    points outside a zone's bounding box cannot intersect it and skip the call)."""
    hits = np.zeros((len(lats), len(zones)), dtype=bool)
    points = shapely.points(lons, lats)
    for j, zone in enumerate(zones):
        minx, miny, maxx, maxy = zone.geometry.bounds
        near = np.flatnonzero((lons >= minx) & (lons <= maxx) & (lats >= miny) & (lats <= maxy))
        hits[near, j] = shapely.intersects(zone.geometry, points[near])
    return [tuple(np.flatnonzero(row).tolist()) for row in hits]


def vertices_and_midpoints(zones: list[Zone]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for zone in zones:
        for ring in shapely.get_rings(shapely.get_parts(zone.geometry)):
            c = shapely.get_coordinates(ring)
            mid = (c[1:] + c[:-1]) / 2
            xs += [c[:, 0], mid[:, 0]]
            ys += [c[:, 1], mid[:, 1]]
    return np.concatenate(ys), np.concatenate(xs)


@pytest.mark.parametrize("layer_file", LAYERS)
def test_batch_routing_agrees_with_brute_force_on_every_real_layer(layer_file: str) -> None:
    zones = load_layer("L", SEATTLE / layer_file)
    index = JurisdictionIndex(zones, resolution=10)
    minx, miny, maxx, maxy = shapely.total_bounds([z.geometry for z in zones])
    rng = np.random.default_rng(len(zones))
    n = 200_000
    vlat, vlon = vertices_and_midpoints(zones)
    lats = np.concatenate((rng.uniform(miny, maxy, n), vlat))
    lons = np.concatenate((rng.uniform(minx, maxx, n), vlon))
    got = index.locate_many(lats, lons)
    expected = brute_force(zones, lats, lons)
    mismatches = [i for i in range(len(lats)) if got[i] != expected[i]]
    assert mismatches == [], f"{len(mismatches)} points differ, e.g. {mismatches[:3]}"
    assert any(len(e) > 1 for e in expected[n:]) or layer_file == "ruv.geojson"


def test_all_layers_together_and_other_resolutions_stay_exact() -> None:
    zones = [z for f in LAYERS for z in load_layer(f.split(".")[0], SEATTLE / f)]
    rng = np.random.default_rng(7)
    lats = rng.uniform(47.49, 47.74, 20_000)
    lons = rng.uniform(-122.44, -122.22, 20_000)
    expected = brute_force(zones, lats, lons)
    for resolution in (8, 9):
        assert JurisdictionIndex(zones, resolution).locate_many(lats, lons) == expected
    # every point in the city lies in one council district, precinct, ZIP area and school area
    index = JurisdictionIndex(zones, 9)
    layers = {z.layer for z in (index.zones[p] for p in index.locate(47.6062, -122.3321))}
    assert {"spd-precincts", "city-council-districts", "zip-codes", "city-limits"} <= layers


def test_point_on_a_shared_border_is_inside_both_zones() -> None:
    west, east = box(0, 0, 0.01, 0.01), box(0.01, 0, 0.02, 0.01)
    index = JurisdictionIndex([Zone("d", 0, "w", west), Zone("d", 1, "e", east)], 10)
    assert index.locate(0.005, 0.01) == (0, 1)  # on the shared edge
    assert index.locate(0.01, 0.01) == (0, 1)  # a shared vertex
    assert index.locate(0.005, 0.005) == (0,)
    assert index.locate(0.005, 0.025) == ()


def test_holes_and_multipolygons_are_respected() -> None:
    ring = Polygon(box(0, 0, 0.01, 0.01).exterior, [box(0.004, 0.004, 0.006, 0.006).exterior])
    multi = shapely.MultiPolygon([box(0.02, 0, 0.03, 0.01), box(0.04, 0, 0.05, 0.01)])
    index = JurisdictionIndex([Zone("z", 0, "ring", ring), Zone("z", 1, "multi", multi)], 11)
    assert index.locate(0.005, 0.005) == ()  # in the hole
    assert index.locate(0.004, 0.005) == (0,)  # on the hole's edge
    assert index.locate(0.001, 0.001) == (0,)
    assert index.locate(0.005, 0.045) == (1,)
    assert index.locate(0.005, 0.035) == ()  # between the parts


def test_hole_touching_its_shell_at_a_vertex() -> None:
    """Found by the property test: the touching vertex's cell was missing from the cover."""
    shell = [(0.001953125, 0.001953125), (0.000239984132205, -0.001953125)]
    shell += [(5.031861381221461e-5, 0), (-0.001953125, 0)]
    hole = [(0.000397640599098, 0), (0, 0.0005181676850637), (5.031861381221461e-5, 0)]
    zone = Polygon(shell, [hole])
    assert zone.is_valid
    neighbour = box(0.001953125, -0.001953125, 0.002953125, 0.001953125)
    zones = [Zone("p", 0, "0", zone), Zone("p", 1, "1", neighbour)]
    index = JurisdictionIndex(zones, 11)
    assert index.locate(0.0, 5.031861381221461e-05) == (0,)
    lats, lons = (g.ravel() for g in np.mgrid[-0.002:0.002:201j, -0.002:0.003:201j])
    assert index.locate_many(lats, lons) == brute_force(zones, lats, lons)


@pytest.mark.parametrize("resolution", [9, 10, 11, 12])
@pytest.mark.parametrize("size", [0.8, 1.0, 1.2])
def test_hole_inside_one_cell_around_its_centre(resolution: int, size: float) -> None:
    """h3's overlap cover drops a cell whose centre lies in a hole wholly inside the cell; the
    rest of that cell is still in the zone."""
    cell = h3.latlng_to_cell(47.61, -122.33, resolution)
    lat, lon = h3.cell_to_latlng(cell)
    half = size * h3.average_hexagon_edge_length(resolution, unit="m") / 111_000 / 2
    hole = box(lon - half, lat - half, lon + half, lat + half)
    zone = Polygon(box(lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01).exterior, [hole.exterior])
    zones = [Zone("z", 0, "ring", zone)]
    index = JurisdictionIndex(zones, resolution)
    ring = [(a, o) for a, o in h3.cell_to_boundary(cell)]
    corners = np.array([(lat + (a - lat) * 0.9, lon + (o - lon) * 0.9) for a, o in ring])
    assert index.locate_many(corners[:, 0], corners[:, 1]) == [(0,)] * len(corners)
    assert index.locate(lat, lon) == ()
    step = 2 * h3.average_hexagon_edge_length(resolution, unit="m") / 111_000
    lats, lons = (g.ravel() for g in np.mgrid[-step:step:101j, -step:step:101j])
    lats, lons = lats + lat, lons + lon
    assert index.locate_many(lats, lons) == brute_force(zones, lats, lons)


def test_locate_many_accepts_sequences_and_empty_batches() -> None:
    index = JurisdictionIndex([Zone("z", 0, "a", box(0, 0, 0.01, 0.01))], 9)
    assert index.locate_many([0.005, 2.0], [0.005, 2.0]) == [(0,), ()]
    assert index.locate_many([], []) == []
    assert JurisdictionIndex([], 9).locate_many([0.5], [0.5]) == [()]


@pytest.mark.parametrize(
    ("lats", "lons", "message"),
    [
        ([1.0, 2.0], [1.0], "equal length"),
        ([float("nan")], [1.0], "not a lat/lon"),
        ([91.0], [1.0], "not a lat/lon"),
    ],
)
def test_bad_points_are_refused_with_a_reason(lats: list, lons: list, message: str) -> None:
    index = JurisdictionIndex([Zone("z", 0, "a", box(0, 0, 0.01, 0.01))], 9)
    with pytest.raises(ValueError, match=message):
        index.locate_many(lats, lons)


def test_resolution_must_be_an_h3_resolution() -> None:
    with pytest.raises(ValueError, match="0..15"):
        JurisdictionIndex([], 16)


def test_precomputed_cells_skip_the_computation_and_give_the_same_answers() -> None:
    zones = load_layer("c", SEATTLE / "city-council-districts.geojson", "district")
    index = JurisdictionIndex(zones, 10)
    rng = np.random.default_rng(3)
    lats, lons = rng.uniform(47.5, 47.73, 2000), rng.uniform(-122.42, -122.25, 2000)
    expected = index.locate_many(lats, lons)
    fine = [h3.latlng_to_cell(a, o, 12) for a, o in zip(lats, lons, strict=True)]  # hex, finer
    assert index.locate_many(lats, lons, cells=fine) == expected
    as_ints = np.array([h3.str_to_int(c) for c in fine], dtype=np.uint64)
    assert index.locate_many(lats, lons, cells=as_ints) == expected
    # unknown (None) and too-coarse cells are computed from the point instead
    mixed: list = [None, h3.latlng_to_cell(lats[1], lons[1], 5)] + fine[2:]
    assert index.locate_many(lats, lons, cells=mixed) == expected
    with pytest.raises(ValueError, match="not a valid H3 cell"):
        index.locate_many(lats[:1], lons[:1], cells=["zzz"])
    with pytest.raises(ValueError, match="not a valid H3 cell"):
        index.locate_many(lats[:1], lons[:1], cells=[12345])
    with pytest.raises(ValueError, match="must match"):
        index.locate_many(lats[:2], lons[:2], cells=fine[:1])


def test_cells_to_resolution_matches_h3_parents() -> None:
    cell = h3.str_to_int(h3.latlng_to_cell(47.6, -122.3, 13))
    for res in (8, 10, 13):
        parent = h3.str_to_int(h3.cell_to_parent(h3.int_to_str(cell), res))
        assert cells_to_resolution(np.array([cell], np.uint64), res)[0] == parent
    assert cells_to_resolution(np.array([cell, 0], np.uint64), 14).tolist() == [0, 0]
    assert parse_cells(np.array([5], dtype=np.int64)).dtype == np.uint64


def test_bulk_and_loop_cell_computation_agree() -> None:
    rng = np.random.default_rng(5)
    lats, lons = rng.uniform(-80, 80, 500), rng.uniform(-179, 179, 500)
    loop = geo_cells._cells_h3(lats, lons, 10)
    pairs = zip(lats, lons, strict=True)
    assert loop.tolist() == [h3.str_to_int(h3.latlng_to_cell(a, o, 10)) for a, o in pairs]
    if geo_cells._h3ronpy_cells is not None:
        assert geo_cells._cells_h3ronpy(lats, lons, 10).tolist() == loop.tolist()
    near = loop[:50]
    by_loop = geo_cells._cell_polygons_h3(near)
    assert shapely.equals_exact(geo_cells._cell_polygons(near), by_loop, 1e-12).all()
    assert len(geo_cells._cell_polygons(near[:0])) == 0


def test_lines_and_areas_reach_every_zone_they_touch() -> None:
    zones = [Zone("d", i, str(i), box(i / 100, 0, (i + 1) / 100, 0.01)) for i in range(3)]
    index = JurisdictionIndex(zones, 8)
    assert index.intersecting(LineString([(0.005, 0.005), (0.015, 0.005)])) == (0, 1)
    assert index.intersecting(LineString([(0.02, 0.02), (0.02, 0.01)])) == (1, 2)  # a corner
    assert index.intersecting(box(5, 5, 6, 6)) == ()
    assert index.intersecting(circle(0.005, 0.025, 100)) == (2,)


def test_stats_report_size_and_build_time() -> None:
    index = JurisdictionIndex([Zone("z", 0, "a", box(0, 0, 0.01, 0.01))], 10)
    stats = index.stats()
    assert stats["cells"] == stats["interior_cells"] + stats["boundary_cells"] > 0
    assert stats["interior_cells"] > 0 and stats["boundary_cells"] > 0
    assert stats["cell_table_bytes"] > 0 and stats["build_seconds"] >= 0
    assert stats["geometry_coordinates"] == 5


def test_circle_and_area_are_in_metres() -> None:
    c = circle(47.6, -122.3, 200)
    assert area_m2(c) == pytest.approx(np.pi * 200**2, rel=0.01)
    assert area_m2(Polygon()) == 0.0
    with pytest.raises(ValueError, match="positive"):
        circle(47.6, -122.3, 0)


# --- loading real and broken files ------------------------------------------------------------


def test_real_layers_load_with_names_or_indexes() -> None:
    precincts = load_layer("spd", SEATTLE / "spd-precincts.geojson", "name")
    assert [z.index for z in precincts] == list(range(5))
    assert {z.geometry.geom_type for z in precincts} == {"MultiPolygon"}
    limits = load_layer("city", SEATTLE / "city-limits.geojson")  # no properties at all
    assert limits[3].name == "#3" and limits[3].ref == "city#3"
    council = load_layer("cc", SEATTLE / "city-council-districts.geojson")  # legacy crs member
    assert len(council) == 7


def fc(*features: object, **extra: object) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features), **extra})


def feature(geometry: object, **props: object) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": props}


SQUARE = mapping(box(0, 0, 1, 1))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "cannot read GeoJSON"),
        ("[]", "not a GeoJSON FeatureCollection"),
        (fc({"type": "Feature"}), r"features\[0\]: has no geometry"),
        (fc(feature({"type": "Polygon", "coordinates": "x"})), r"features\[0\].geometry"),
        (fc(feature({"type": "Polygon", "coordinates": []})), "is empty"),
        (fc(feature({"type": "Point", "coordinates": [1, 2]})), "must be a Polygon"),
        (fc(feature(mapping(box(0, 0, 500000, 500000)))), "outside lon/lat range"),
        (fc(feature(SQUARE), crs={"properties": {"name": "EPSG:2926"}}), "not WGS84"),
        (fc(feature(SQUARE, other=1)), "no 'name' property"),
    ],
)
def test_unusable_layers_are_refused_naming_the_feature(text: str, message: str) -> None:
    with pytest.raises(LayerError, match=message):
        parse_layer("x", text, "name")


def test_missing_file_is_a_layer_error(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="cannot read"):
        load_layer("x", tmp_path / "missing.geojson")


def test_invalid_rings_are_repaired_and_stay_areal() -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    (zone,) = parse_layer("x", fc(feature(bowtie, name="b")), "name")
    assert zone.geometry.is_valid and zone.geometry.geom_type == "MultiPolygon"
    assert zone.name == "b" and zone.repaired
    spike = {"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 2], [0, 0], [3, 0], [0, 0]]]}
    (zone,) = parse_layer("x", fc(feature(spike)))
    assert zone.geometry.is_valid and zone.geometry.geom_type in ("Polygon", "MultiPolygon")


def test_combined_indexes_answer_like_one_index_over_all_zones() -> None:
    zones = [Zone("d", i, str(i), box(i / 100, 0, (i + 1) / 100, 0.01)) for i in range(3)]
    a, b = JurisdictionIndex(zones[:2], 10), JurisdictionIndex(zones[2:], 10)
    both = JurisdictionIndex.combine([a, b])
    rng = np.random.default_rng(9)
    lats, lons = rng.uniform(-0.001, 0.011, 3000), rng.uniform(-0.001, 0.031, 3000)
    assert both.zones == tuple(zones)
    assert both.locate_many(lats, lons) == JurisdictionIndex(zones, 10).locate_many(lats, lons)
    assert both.locate(0.005, 0.02) == (1, 2)
    with pytest.raises(ValueError, match="resolutions"):
        JurisdictionIndex.combine([a, JurisdictionIndex(zones[2:], 9)])
