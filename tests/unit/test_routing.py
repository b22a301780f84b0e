"""An event reaches exactly the departments whose jurisdiction contains it and that subscribe."""

import random

import pytest
import shapely
from shapely.geometry import Point, shape

from city.config import parse_city
from city.geo import Zone
from city.routing import Router, load_zones
from city.sharing import PolicyRule, SharingConfig

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


@pytest.fixture(scope="module")
def open_city(seattle):
    """The demo city with every department sharing everything: isolates geo + subscriptions."""
    config, base = seattle
    share_all = SharingConfig(
        policies=[PolicyRule(id=f"all-{d}", owner=d, types=["*"]) for d in config.department_ids]
    )
    return config.model_copy(update={"sharing": share_all}), base


@pytest.fixture(scope="module")
def open_router(open_city):
    return Router.from_config(*open_city)


def test_points_across_seattle_match_brute_force(open_city, open_router):
    config, base = open_city
    seattle_router = open_router
    zones = load_zones(config, base)
    rng = random.Random(7)
    minx, miny, maxx, maxy = shapely.union_all([z.geometry for z in zones]).bounds
    events = []
    for i in range(400):
        lat, lon = rng.uniform(miny, maxy), rng.uniform(minx, maxx)
        events.append(
            {
                "id": str(i),
                "type": rng.choice(TYPES),
                "department": rng.choice(config.department_ids),
                "location": {"lat": lat, "lon": lon},
            }
        )
    decisions = seattle_router.route_batch(events)
    inside = 0
    for event, deliveries in zip(events, decisions, strict=True):
        loc = event["location"]
        point = Point(loc["lon"], loc["lat"])
        want = expected_recipients(config, zones, event["type"], point)
        assert {d.dept for d in deliveries.deliveries} == want, event
        deliveries = deliveries.deliveries
        inside += any(d.zones for d in deliveries)
    assert inside > 100  # the sample really exercised jurisdictions


def test_lines_and_areas_reach_every_jurisdiction_they_touch(open_city, open_router):
    config, base = open_city
    seattle_router = open_router
    zones = load_zones(config, base)
    # A road closure running from West precinct into East precinct.
    line = {"type": "LineString", "coordinates": [[-122.35, 47.615], [-122.30, 47.615]]}
    deliveries = seattle_router.route(
        {"id": "l", "type": "traffic.incident", "department": "sdot", "location": line}
    )
    got = {d.dept for d in deliveries}
    assert {"spd-west", "spd-east"} <= got
    assert got == expected_recipients(config, zones, "traffic.incident", shape(line))


def test_event_without_location_reaches_only_citywide_subscribers(seattle_router):
    event = {"id": "x", "type": "environment.air_quality", "department": "environment"}
    deliveries = seattle_router.route(event)
    assert {d.dept for d in deliveries} == {"public-health", "environment"}
    assert all(d.citywide and d.explain()["scope"] == "citywide" for d in deliveries)


def test_event_outside_the_city_reaches_only_citywide_subscribers(seattle_router):
    far = {
        "id": "f",
        "type": "health.emergency",
        "department": "ems",
        "location": {"lat": 40.7, "lon": -74.0},
    }
    assert {d.dept for d in seattle_router.route(far)} == {"emergency-management", "public-health"}


def test_type_nobody_subscribes_to_goes_nowhere(seattle_router):
    assert (
        seattle_router.route({"id": "n", "type": "parking.violation", "department": "sdot"}) == []
    )


def test_delivery_explains_subscriptions_purposes_and_zones(seattle_router):
    event = {
        "id": "d",
        "type": "traffic.incident",
        "department": "sdot",
        "location": {"lat": 47.6205, "lon": -122.3493},
    }
    by_dept = {d.dept: d for d in seattle_router.route(event)}
    west = by_dept["spd-west"].explain()
    assert west == {
        "subscriptions": ["spd-west-incidents"],
        "purpose": "public-safety",
        "zones": ["precincts:W"],
        "scope": "jurisdiction",
        "reason": "policy",
        "policy": "sdot-incidents",
        "grant": None,
    }
    fire = by_dept["fire"]
    assert fire.subscriptions == ["fire-gas-and-crashes"]


def _square(x0, y0, size=0.01):
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
                {"id": "cams", "name": "Cameras"},
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
            "sharing": {"policies": [{"id": "cams-share", "owner": "cams", "types": ["*"]}]},
        }
    )
    zones = [Zone("grid", 0, "#0", _square(0, 0)), Zone("grid", 1, "#1", _square(0.01, 0))]
    router = Router.from_zones(config, zones)
    on_border = {
        "id": "b",
        "type": "traffic.incident",
        "department": "cams",
        "location": {"lat": 0.005, "lon": 0.01},
    }
    deliveries = {d.dept: d for d in router.route(on_border)}
    assert set(deliveries) == {"left", "right"}
    assert deliveries["right"].subscriptions == ["r1", "r2"]
    assert deliveries["right"].purpose == "ops"


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
    with pytest.raises(ValueError, match="names zones no layer has: grid:#7"):
        Router.from_zones(config, [Zone("grid", 0, "#0", _square(0, 0))])


def test_sharing_policies_decide_who_gets_what(seattle_router):
    position = {
        "id": "v",
        "type": "transit.vehicle_position",
        "department": "transit",
        "data": {"vehicle_id": "bus-1", "speed_kmh": 30.0},
        "location": {"lat": 47.6205, "lon": -122.3493},
    }
    routed = seattle_router.route_batch([position])[0]
    assert {d.dept for d in routed.deliveries} == {"transit", "traffic-management"}
    own = next(d for d in routed.deliveries if d.dept == "transit")
    assert own.decision.reason == "own-data"
    incident = {
        "id": "p",
        "type": "traffic.incident",
        "department": "sdot",
        "data": {"kind": "collision", "severity": 3, "plate": "ABC123"},
        "location": {"lat": 47.6205, "lon": -122.3493},
    }
    police = next(d for d in seattle_router.route(incident) if d.dept == "spd-west")
    assert "plate" not in police.decision.fields  # plates travel only under a grant


def test_point_on_a_precinct_border_has_one_owner_and_is_marked_as_a_boundary_case(
    seattle, seattle_router
):
    config, base = seattle
    precincts = {z.name: z.geometry for z in load_zones(config, base) if z.layer == "precincts"}
    shared = precincts["W"].boundary.intersection(precincts["E"].boundary)
    point = shared.representative_point()
    event = {
        "id": "b",
        "type": "traffic.incident",
        "department": "sdot",
        "location": {"lat": point.y, "lon": point.x},
    }
    routed = seattle_router.route_batch([event])[0]
    police = {d.dept for d in routed.deliveries if d.dept.startswith("spd-")}
    assert len(police) == 1
    assert sorted(routed.ties["precincts"]) == ["E", "W"]


def test_area_subscription_reaches_its_department_near_its_points(seattle_router):
    near_pump = {
        "id": "n",
        "type": "traffic.incident",
        "department": "sdot",
        "location": {"lat": 47.6418, "lon": -122.3271},
    }
    water = [d for d in seattle_router.route(near_pump) if d.dept == "spu-water"]
    assert [(d.subscriptions, d.zones, d.purpose) for d in water] == [
        (["water-pump-stations"], ["area:water-pump-stations"], "asset-protection")
    ]
    far = dict(near_pump, location={"lat": 47.6205, "lon": -122.3493})
    assert all(d.dept != "spu-water" for d in seattle_router.route(far))
