"""An event reaches exactly the departments whose jurisdiction contains it and that subscribe."""

import random

import pytest
import shapely
from shapely.geometry import Point, shape

from city.config import parse_city
from city.geo import JurisdictionIndex, Zone
from city.routing import Router, load_zones

TYPES = [
    "traffic.incident",
    "safety.dispatch",
    "utility.meter_alarm",
    "environment.air_quality",
    "health.emergency",
    "transit.vehicle_position",
]


def expected_recipients(config, zones, event_type, geometry):
    """Brute force straight from the config: no index, no memoisation."""
    hit = {
        (z.layer, z.name) for z in zones if geometry is not None and z.geometry.intersects(geometry)
    }
    result = set()
    for dept in config.departments:
        owned = set()
        for ref in dept.jurisdiction:
            owned |= {
                (z.layer, z.name)
                for z in zones
                if z.layer == ref.layer and (ref.zones == "all" or z.name in ref.zones)
            }
        for sub in dept.subscriptions:
            named = any(
                t == event_type or (t.endswith(".*") and event_type.startswith(t[:-1]))
                for t in sub.types
            )
            if named and (sub.scope == "citywide" or owned & hit):
                result.add(dept.id)
    return result


def test_points_across_seattle_match_brute_force(seattle, seattle_router):
    config, base = seattle
    zones = load_zones(config, base)
    rng = random.Random(7)
    minx, miny, maxx, maxy = shapely.union_all([z.geometry for z in zones]).bounds
    events = []
    for i in range(400):
        lat, lon = rng.uniform(miny, maxy), rng.uniform(minx, maxx)
        events.append(
            {"id": str(i), "type": rng.choice(TYPES), "location": {"lat": lat, "lon": lon}}
        )
    decisions = seattle_router.route_batch(events)
    inside = 0
    for event, deliveries in zip(events, decisions):
        loc = event["location"]
        point = Point(loc["lon"], loc["lat"])
        want = expected_recipients(config, zones, event["type"], point)
        assert {d.dept for d in deliveries} == want, event
        inside += any(d.zones for d in deliveries)
    assert inside > 100  # the sample really exercised jurisdictions


def test_lines_and_areas_reach_every_jurisdiction_they_touch(seattle, seattle_router):
    config, base = seattle
    zones = load_zones(config, base)
    # A road closure running from West precinct into East precinct.
    line = {"type": "LineString", "coordinates": [[-122.35, 47.615], [-122.30, 47.615]]}
    deliveries = seattle_router.route({"id": "l", "type": "traffic.incident", "location": line})
    got = {d.dept for d in deliveries}
    assert {"spd-west", "spd-east"} <= got
    assert got == expected_recipients(config, zones, "traffic.incident", shape(line))


def test_event_without_location_reaches_only_citywide_subscribers(seattle_router):
    deliveries = seattle_router.route({"id": "x", "type": "environment.air_quality"})
    assert {d.dept for d in deliveries} == {"public-health", "environment"}
    assert all(d.citywide and d.explain()["scope"] == "citywide" for d in deliveries)


def test_event_outside_the_city_reaches_only_citywide_subscribers(seattle_router):
    far = {"id": "f", "type": "health.emergency", "location": {"lat": 40.7, "lon": -74.0}}
    assert {d.dept for d in seattle_router.route(far)} == {"emergency-management", "public-health"}


def test_type_nobody_subscribes_to_goes_nowhere(seattle_router):
    assert seattle_router.route({"id": "n", "type": "parking.violation"}) == []


def test_delivery_explains_subscriptions_purposes_and_zones(seattle_router):
    event = {
        "id": "d",
        "type": "traffic.incident",
        "location": {"lat": 47.6205, "lon": -122.3493},
    }
    by_dept = {d.dept: d for d in seattle_router.route(event)}
    west = by_dept["spd-west"].explain()
    assert west == {
        "subscriptions": ["spd-west-incidents"],
        "purposes": ["public-safety"],
        "zones": ["precincts:W"],
        "scope": "jurisdiction",
    }
    fire = by_dept["fire"]
    assert fire.subscriptions == ["fire-gas-and-crashes"]


def _square(x0, y0, size=1.0):
    return shapely.box(x0, y0, x0 + size, y0 + size)


def test_shared_border_points_belong_to_both_sides_and_wildcards_match():
    config = parse_city(
        {
            "city": "Grid",
            "layers": {"grid": {"path": "unused.geojson"}},
            "departments": [
                {
                    "id": "left",
                    "name": "Left",
                    "jurisdiction": [{"layer": "grid", "zones": ["#0"]}],
                    "subscriptions": [{"id": "l", "types": ["*"]}],
                },
                {
                    "id": "right",
                    "name": "Right",
                    "jurisdiction": [{"layer": "grid", "zones": ["#1"]}],
                    "subscriptions": [
                        {"id": "r1", "types": ["traffic.*"], "purpose": "ops"},
                        {"id": "r2", "types": ["traffic.incident"], "purpose": "ops"},
                    ],
                },
            ],
        }
    )
    zones = [Zone("grid", 0, "#0", _square(0, 0)), Zone("grid", 1, "#1", _square(1, 0))]
    router = Router(config, JurisdictionIndex(zones))
    on_border = {"id": "b", "type": "traffic.incident", "location": {"lat": 0.5, "lon": 1.0}}
    deliveries = {d.dept: d for d in router.route(on_border)}
    assert set(deliveries) == {"left", "right"}
    assert deliveries["right"].subscriptions == ["r1", "r2"]
    assert deliveries["right"].purposes == ["ops"]


def test_a_zone_name_missing_from_its_layer_is_reported():
    config = parse_city(
        {
            "city": "Grid",
            "layers": {"grid": {"path": "unused.geojson"}},
            "departments": [
                {
                    "id": "left",
                    "name": "Left",
                    "jurisdiction": [{"layer": "grid", "zones": ["#7"]}],
                    "subscriptions": [{"id": "l", "types": ["*"]}],
                }
            ],
        }
    )
    with pytest.raises(ValueError, match="has no zone named #7"):
        Router(config, JurisdictionIndex([Zone("grid", 0, "#0", _square(0, 0))]))
