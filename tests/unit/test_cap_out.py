"""CAP 1.2 out: every rendered alert validates against the OASIS schema and reads back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest
import xmlschema

from city.cap import CAP12_NS, CapError, event_to_cap, events_from_cap
from city.events import Event, Priority

DATA = Path(__file__).parents[1] / "data" / "cap"
# the OASIS schema file, copied verbatim into the package
SCHEMA = xmlschema.XMLSchema(str(Path(__file__).parents[2] / "city" / "data" / "cap12.xsd"))
NS = {"cap": CAP12_NS}


def valid(xml: str) -> ET.Element:
    SCHEMA.validate(xml)
    return ET.fromstring(xml)


@pytest.mark.parametrize("path", sorted(DATA.glob("*.xml")), ids=lambda p: p.name)
def test_real_alerts_render_back_to_valid_cap_with_the_same_events(path: Path) -> None:
    events = events_from_cap(path.read_bytes(), department="oem")
    for event in events:
        xml = event_to_cap(event)
        valid(xml)
        (again,) = events_from_cap(xml, department="oem")
        again_wire, wire = again.to_wire(), event.to_wire()
        # one info per rendered alert: its index (and so id) restarts at 0 for later infos
        for attrs in (again_wire, wire):
            attrs.pop("id")
            attrs["data"].pop("info_index", None)
        # the rendered alert is the city's, unsigned: the original signature is not carried
        assert again_wire.pop("signature") == "absent"
        wire.pop("signature")
        assert again_wire == wire


def test_cap_event_with_new_sender_is_reissued_by_the_city() -> None:
    (event,) = events_from_cap((DATA / "v1dot2_appendix_adot2.xml").read_bytes())
    root = valid(event_to_cap(event, sender="oem@seattle.gov", scope="Restricted"))
    assert root.findtext("cap:identifier", namespaces=NS) == event.id
    assert root.findtext("cap:sender", namespaces=NS) == "oem@seattle.gov"
    assert root.findtext("cap:restriction", namespaces=NS)
    assert root.findtext("cap:info/cap:event", namespaces=NS) == "SEVERE THUNDERSTORM"


def dispatch(**attrs: object) -> Event:
    data = {
        "incident_number": "F-1",
        "nature": "gas main rupture",
        "caller_phone": "+12065550100",
        "deadline": "2026-11-25T19:00:00+01:00",
    }
    attrs.setdefault("priority", Priority.EMERGENCY)
    return Event.new(
        "safety.dispatch",
        "/city/fire",
        data,
        department="fire",
        time=datetime(2026, 11, 25, 17, 30, 12, 345678, tzinfo=UTC),
        **attrs,
    )


def test_emergency_event_renders_as_public_alert_without_personal_data() -> None:
    xml = event_to_cap(dispatch(location={"lat": 47.6062, "lon": -122.3321}))
    root = valid(xml)
    assert root.findtext("cap:sent", namespaces=NS) == "2026-11-25T17:30:12-00:00"
    info = root.find("cap:info", NS)
    assert info is not None
    assert info.findtext("cap:category", namespaces=NS) == "Safety"
    assert [
        info.findtext(f"cap:{n}", namespaces=NS) for n in ("urgency", "severity", "certainty")
    ] == [
        "Immediate",
        "Severe",
        "Observed",
    ]
    assert info.findtext("cap:expires", namespaces=NS) == "2026-11-25T18:00:00-00:00"
    assert "gas main rupture" in (info.findtext("cap:description", namespaces=NS) or "")
    assert "+12065550100" not in xml and "F-1" not in xml
    assert info.findtext("cap:area/cap:circle", namespaces=NS) == "47.6062,-122.3321 0"
    # and it reads back as a CAP event of the same priority at the same place
    (again,) = events_from_cap(xml)
    assert again.priority is Priority.EMERGENCY and again.point() == (47.6062, -122.3321)


ring = [[-122.34, 47.60], [-122.33, 47.60], [-122.33, 47.61], [-122.34, 47.61], [-122.34, 47.60]]
hole = [[-122.338, 47.602], [-122.336, 47.602], [-122.336, 47.604], [-122.338, 47.602]]


@pytest.mark.parametrize(
    ("location", "polygons", "circles"),
    [
        ({"type": "Point", "coordinates": [-122.3, 47.6]}, 0, 1),
        ({"type": "MultiPoint", "coordinates": [[-122.3, 47.6], [-122.4, 47.7]]}, 0, 2),
        ({"type": "Polygon", "coordinates": [ring, hole]}, 1, 0),
        ({"type": "MultiPolygon", "coordinates": [[ring], [ring]]}, 2, 0),
        ({"type": "LineString", "coordinates": [[-122.3, 47.6], [-122.4, 47.7]]}, 1, 0),
        ({"type": "MultiLineString", "coordinates": [[[-122.3, 47.6], [-122.4, 47.7]]]}, 1, 0),
    ],
)
def test_every_location_shape_becomes_a_valid_cap_area(location, polygons, circles) -> None:  # type: ignore[no-untyped-def]
    root = valid(event_to_cap(dispatch(location=location)))
    area = root.find("cap:info/cap:area", NS)
    assert area is not None
    assert len(area.findall("cap:polygon", NS)) == polygons
    assert len(area.findall("cap:circle", NS)) == circles
    (again,) = events_from_cap(ET.tostring(root))
    assert again.location is not None


def test_line_becomes_its_bounding_box() -> None:
    event = dispatch(
        location={"type": "LineString", "coordinates": [[-122.3, 47.6], [-122.4, 47.7]]}
    )
    (again,) = events_from_cap(event_to_cap(event))
    assert again.location is not None
    lons = sorted({p[0] for p in again.location.coordinates[0]})
    lats = sorted({p[1] for p in again.location.coordinates[0]})
    assert (lons, lats) == ([-122.4, -122.3], [47.6, 47.7])


@pytest.mark.parametrize("priority", list(Priority))
def test_every_priority_and_no_location(priority: Priority) -> None:
    event = Event.new(
        "environment.air_quality", "/city/env", {"sensor_id": "s1"}, priority=priority
    )
    root = valid(event_to_cap(event, status="Exercise"))
    assert root.findtext("cap:status", namespaces=NS) == "Exercise"
    assert root.find("cap:info/cap:area", NS) is None
    assert root.findtext("cap:info/cap:category", namespaces=NS) == "Env"
    assert root.findtext("cap:sender", namespaces=NS) == "cityrelay@city"


def test_unknown_domain_is_category_other_and_no_text_fields_means_no_description() -> None:
    root = valid(event_to_cap(Event.new("parks.tree_down", "/city/parks", {"tree": 7})))
    assert root.findtext("cap:info/cap:category", namespaces=NS) == "Other"
    assert root.find("cap:info/cap:description", NS) is None


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(CapError, match="not a CAP payload"):
        event_to_cap(Event.new("cap.met", "/cap/x", {"identifier": "only"}))
    with pytest.raises(CapError, match="not an ISO 8601 time"):
        event_to_cap(Event.new("parks.tree_down", "/city/parks", {"deadline": "tomorrow"}))
