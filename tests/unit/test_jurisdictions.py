"""Versioned jurisdictions: each point is routed by the boundaries in force at its own time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import LineString, Polygon, box, mapping

from city.config import ConfigError, parse_city
from city.geo import (
    BEGINNING,
    AreaIndex,
    AreaSubscription,
    GeoConfig,
    Jurisdictions,
    LayerError,
    LayerVersion,
    TieBreak,
    Zone,
    break_tie,
    coverage_diff,
    departments_for,
    parse_geo,
    validate_version,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
# Two precincts split at lon 0.01; version 1 moves the border east to lon 0.015.
WEST, EAST = box(0, 0, 0.01, 0.01), box(0.01, 0, 0.02, 0.01)
WEST2, EAST2 = box(0, 0, 0.015, 0.01), box(0.015, 0, 0.02, 0.01)


def geojson(*named: tuple[str, object]) -> str:
    return json.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "geometry": mapping(g), "properties": {"name": n}}
                for n, g in named
            ],
        }
    )


def version(n: int, at: datetime, *named: tuple[str, object], layer: str = "pd") -> LayerVersion:
    return LayerVersion.from_geojson(layer, n, at, geojson(*named), "name")


V0 = version(0, BEGINNING, ("west", WEST), ("east", EAST))
V1 = version(1, T0, ("west", WEST2), ("east", EAST2))
COUNCIL = version(0, BEGINNING, ("d1", box(0, 0, 0.02, 0.01)), layer="council")


def names(located) -> list[str]:  # noqa: ANN001
    return [f"{z.layer}:{z.name}" for z in located.zones]


def test_each_point_follows_the_boundaries_of_its_own_time() -> None:
    world = Jurisdictions([V0, V1, COUNCIL], resolution=10)
    lat, lon = 0.005, 0.012  # between the old and the new border
    before, after = T0 - timedelta(seconds=1), T0
    out = world.locate_batch([lat, lat, lat], [lon, lon, lon], [before, after, T0.timestamp()])
    assert names(out[0]) == ["council:d1", "pd:east"]
    assert dict(out[0].versions) == {"council": 0, "pd": 0}
    assert names(out[1]) == ["council:d1", "pd:west"]
    assert dict(out[1].versions) == {"council": 0, "pd": 1}
    assert names(out[2]) == names(out[1])
    # epoch seconds as an array, and "now" by default
    arr = world.locate_batch([lat], [lon], np.array([before.timestamp()]))
    assert names(arr[0]) == ["council:d1", "pd:east"]
    assert world.locate(lat, lon).versions["pd"] == 1
    assert world.locate(lat, lon, at=before).versions["pd"] == 0
    assert out[0].refs() == ("council#0", "pd#1")


def test_layers_not_yet_in_force_and_empty_worlds_answer_nothing() -> None:
    world = Jurisdictions([V1], resolution=9)
    assert world.locate(0.005, 0.005, at=T0 - timedelta(days=1)).zones == ()
    assert world.versions_at(T0 - timedelta(days=1)) == {}
    assert Jurisdictions([]).locate_batch([1.0], [1.0])[0].zones == ()
    assert world.locate_batch([], []) == []


def test_precomputed_cells_are_used_for_every_layer() -> None:
    import h3

    world = Jurisdictions([V0, COUNCIL], resolution=10)
    cell = h3.latlng_to_cell(0.005, 0.005, 11)
    out = world.locate_batch([0.005, 0.005], [0.005, 0.005], [T0, T0], cells=[cell, None])
    assert names(out[0]) == names(out[1]) == ["council:d1", "pd:west"]


def test_times_must_be_aware_and_match_the_points() -> None:
    world = Jurisdictions([V0])
    with pytest.raises(ValueError, match="time zone|timezone"):
        world.locate_batch([0.0], [0.0], [datetime(2026, 1, 1)])
    with pytest.raises(ValueError, match="must match"):
        world.locate_batch([0.0, 0.0], [0.0, 0.0], [T0])


def test_exclusive_layer_picks_one_owner_and_records_the_boundary_case() -> None:
    world = Jurisdictions([V0], resolution=10, exclusive={"pd": TieBreak(rule="name")})
    on_border = world.locate(0.005, 0.01)
    assert names(on_border) == ["pd:east"]  # "east" < "west"
    assert dict(on_border.ties) == {"pd": ("west", "east")}
    inside = world.locate(0.005, 0.005)
    assert names(inside) == ["pd:west"] and inside.ties == {}
    # non-exclusive layers keep both owners
    assert names(Jurisdictions([V0], resolution=10).locate(0.005, 0.01)) == ["pd:west", "pd:east"]


def test_tie_break_rules() -> None:
    zones = [Zone("pd", 0, "west", WEST), Zone("pd", 1, "east", EAST), Zone("pd", 2, "a", EAST)]
    assert break_tie(zones, TieBreak()).name == "west"
    assert break_tie(zones, TieBreak(rule="name")).name == "a"
    assert break_tie(zones, TieBreak(rule="priority", priority=["x", "east"])).name == "east"
    assert break_tie(zones, TieBreak(rule="priority", priority=["x"])).name == "west"


def test_lines_and_areas_use_the_versions_in_force() -> None:
    world = Jurisdictions([V0, V1, COUNCIL], resolution=9)
    road = LineString([(0.011, 0.005), (0.013, 0.005)])
    assert names(world.intersecting(road, at=T0 - timedelta(hours=1))) == [
        "council:d1",
        "pd:east",
    ]
    assert names(world.intersecting(road, at=T0))[1:] == ["pd:west"]
    assert world.intersecting(road).versions == {"council": 0, "pd": 1}


def test_history_versions_and_shared_index_cache() -> None:
    world = Jurisdictions([V0, COUNCIL], resolution=9)
    world.prepare()
    later = world.with_versions([V1])
    assert [v.version for v in later.history("pd")] == [0, 1]
    assert later.version("pd", 1) is V1
    assert later.index(V0) is world.index(V0)  # built once, shared
    assert later.layers == ["council", "pd"]
    with pytest.raises(KeyError, match="unknown layer"):
        later.history("nope")
    with pytest.raises(KeyError, match="no version 7"):
        later.version("pd", 7)


def test_a_version_needs_features() -> None:
    with pytest.raises(LayerError, match="no features"):
        LayerVersion.from_geojson("pd", 1, T0, '{"type":"FeatureCollection","features":[]}')


def test_coverage_diff_reports_the_area_that_changes_hands() -> None:
    diff = coverage_diff(V0, V1)
    strip = diff.transfers[0]
    assert strip[:2] == ("east", "west")
    # the strip is 0.005 deg x 0.01 deg at the equator: about 556 m x 1113 m
    assert strip[2] == pytest.approx(0.005 * 0.01 * 111_195**2, rel=0.01)
    assert set(diff.gained) == {"west"} and set(diff.lost) == {"east"}
    assert diff.changed_m2 == pytest.approx(strip[2])
    doc = diff.as_dict()
    assert doc["from_version"] == 0 and doc["to_version"] == 1
    assert doc["transfers"][0]["from"] == "east"


def test_coverage_diff_names_new_removed_and_uncovered_area() -> None:
    grown = version(2, T0, ("west", WEST), ("north", box(0, 0.01, 0.02, 0.02)))
    diff = coverage_diff(V0, grown)
    assert diff.added == ["north"] and diff.removed == ["east"]
    kinds = {(f, t) for f, t, _ in diff.transfers}
    assert ("east", "") in kinds  # nobody covers the old east any more
    assert ("", "north") in kinds  # newly covered area
    twice = version(3, T0, ("west", WEST), ("west", EAST))  # one zone in two features
    assert coverage_diff(V0, twice).transfers[0][:2] == ("east", "west")


CITY = {
    "city": "test",
    "layers": {"pd": {"path": "pd.geojson", "name_property": "name"}},
    "departments": [
        {"id": "police-west", "name": "West", "jurisdiction": [{"layer": "pd", "zones": ["west"]}]},
        {"id": "police-all", "name": "All", "jurisdiction": [{"layer": "pd", "zones": "all"}]},
        {"id": "parks", "name": "Parks"},
    ],
}


def test_validation_blocks_losing_a_zone_a_department_answers_for() -> None:
    config = parse_city(CITY)
    renamed = version(2, T0, ("western", WEST), ("east", EAST), ("east", EAST))
    errors, warnings = validate_version(renamed, config)
    assert any("'police-west'" in e and "'west'" in e for e in errors)
    assert any("more than one feature: east" in w for w in warnings)
    errors, warnings = validate_version(V1, config, exclusive=True)
    assert errors == [] and warnings == []
    bowtie = Polygon([(0, 0), (0.01, 0.01), (0.01, 0), (0, 0.01)])
    _, warnings = validate_version(version(2, T0, ("west", bowtie), ("east", EAST)), config)
    assert warnings == ["pd#0 (west): invalid geometry in the file, repaired"]
    overlapping = version(2, T0, ("west", WEST2), ("east", EAST))
    _, warnings = validate_version(overlapping, config, exclusive=True)
    assert any("overlap" in w for w in warnings)


def test_departments_are_found_through_their_jurisdiction_refs() -> None:
    config = parse_city(CITY)
    west, east = V0.zones
    assert departments_for(config, [west]) == {"police-west": [west], "police-all": [west]}
    assert departments_for(config, [east]) == {"police-all": [east]}
    assert departments_for(config, []) == {}


def test_from_city_loads_version_zero_of_every_layer(tmp_path: Path) -> None:
    (tmp_path / "pd.geojson").write_text(geojson(("west", WEST), ("east", EAST)))
    config = parse_city(CITY)
    world = Jurisdictions.from_city(config, tmp_path, GeoConfig(resolution=9))
    (v0,) = world.history("pd")
    assert v0.version == 0 and v0.effective_from == BEGINNING and len(v0.checksum) == 64
    assert names(world.locate(0.005, 0.005)) == ["pd:west"]
    assert world.resolution == 9
    assert Jurisdictions.from_city(config, tmp_path).resolution == 10


# --- config section and subscription areas ---------------------------------------------------

PUMP = (0.005, 0.005)


def test_area_subscriptions_by_radius_and_polygon() -> None:
    near = AreaSubscription(id="pumps", department="water", points=[PUMP], radius_m=200)
    zone = AreaSubscription(
        id="park", department="parks", geometry=mapping(box(0.1, 0.1, 0.2, 0.2))
    )
    index = AreaIndex([near, zone], resolution=11)
    deg_per_m = 1 / 111_195
    lats = [PUMP[0] + 150 * deg_per_m, PUMP[0] + 250 * deg_per_m, 0.15]
    lons = [PUMP[1], PUMP[1], 0.15]
    assert [tuple(a.id for a in hit) for hit in index.matching(lats, lons)] == [
        ("pumps",),
        (),
        ("park",),
    ]
    road = LineString([(0.0, 0.0), (0.2, 0.2)])
    assert [a.id for a in index.intersecting(road)] == ["pumps", "park"]


@pytest.mark.parametrize(
    ("area", "message"),
    [
        ({}, "either 'geometry' or 'points'"),
        ({"points": [[1, 2]]}, "needs 'radius_m'"),
        ({"geometry": {"type": "Point", "coordinates": [1, 2]}}, "valid Polygon"),
        ({"geometry": {"type": "Polygon", "coordinates": "x"}}, "geometry:"),
        ({"points": [[122, 47]], "radius_m": 10}, "is not \\[lat, lon\\]"),
    ],
)
def test_bad_areas_are_refused(area: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_geo({"areas": [{"id": "a", "department": "parks", **area}]})


def test_geo_section_checks_references_against_the_city() -> None:
    config = parse_city(CITY)
    geo = parse_geo({"resolution": 11, "exclusive": {"pd": {"rule": "name"}}, "areas": []}, config)
    assert geo.resolution == 11 and geo.exclusive["pd"].rule == "name"
    assert parse_geo(None).resolution == 10
    with pytest.raises(ConfigError) as err:
        parse_geo(
            {
                "exclusive": {"zip": {}},
                "areas": [{"id": "a", "department": "ghost", "points": [[0, 0]], "radius_m": 5}],
            },
            config,
        )
    assert [where for where, _ in err.value.problems] == [
        "geo.exclusive.zip",
        "geo.areas[0].department",
    ]
    with pytest.raises(ConfigError, match=r"geo\.resolution"):
        parse_geo({"resolution": 20})


def test_many_version_sets_stay_correct_with_a_bounded_cache() -> None:
    layout = [("west", WEST), ("east", EAST)], [("west", WEST2), ("east", EAST2)]
    versions = [V0] + [version(k, T0 + timedelta(hours=k), *layout[k % 2]) for k in range(1, 11)]
    world = Jurisdictions(versions, resolution=9)
    for k in range(11):
        at = T0 + timedelta(hours=k, minutes=1) if k else BEGINNING
        expected = "west" if k % 2 else "east"
        assert names(world.locate(0.005, 0.012, at=at)) == [f"pd:{expected}"]
    assert len(world._combos) == 8
