"""CAP 1.2 in: real alerts parse, bad ones are refused clearly, geometry and priority are right."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from shapely.geometry import Point, shape

from city.cap import (
    CAP_TYPES,
    CapError,
    CapPayload,
    cap_priority,
    events_from_cap,
)
from city.events import Event, Priority
from city.schemas import BUILTIN_TYPES

DATA = Path(__file__).parents[1] / "data" / "cap"
REAL_ALERTS = sorted(DATA.glob("*.xml"))


def alert(
    info: str = "", *, head: str = "", status: str = "Actual", msg_type: str = "Alert"
) -> str:
    """A minimal valid CAP 1.2 alert with the given info blocks."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>SEA-2026-0001</identifier>
  <sender>oem@seattle.gov</sender>
  <sent>2026-11-25T10:00:00-08:00</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>{head}{info}
</alert>"""


def info(area: str = "", *, category: str = "Safety", usc=("Immediate", "Extreme", "Observed"),
         extra: str = "") -> str:  # fmt: skip
    u, s, c = usc
    return f"""
  <info>
    <category>{category}</category>
    <event>Gas main rupture</event>
    <urgency>{u}</urgency><severity>{s}</severity><certainty>{c}</certainty>
    <headline>Evacuate 2nd Ave</headline>{extra}{area}
  </info>"""


def test_every_real_alert_parses_into_valid_events() -> None:
    assert len(REAL_ALERTS) == 6
    for path in REAL_ALERTS:
        events = events_from_cap(path.read_bytes(), department="oem")
        assert events, path.name
        for event in events:
            # the wire form is what ingest re-validates: envelope and the registered payload model
            again = Event.model_validate(event.to_wire())
            model, _ = CAP_TYPES[again.type]
            model.model_validate(again.data)
            assert again.department == "oem" and again.source == "/city/oem"


def test_specification_example_thunderstorm() -> None:
    (event,) = events_from_cap((DATA / "v1dot2_appendix_adot2.xml").read_bytes())
    assert event.type == "cap.met"
    assert event.priority is Priority.EMERGENCY  # Immediate / Severe / Observed
    assert event.source == "/cap/KSTO@NWS.NOAA.GOV"
    assert event.location is not None and event.location.type == "Polygon"
    ring = event.location.coordinates[0]
    assert [-120.14, 38.47] in ring  # CAP "lat,lon" became GeoJSON [lon, lat]
    assert event.data["deadline"] == "2003-06-17T23:00:00Z"  # expires 16:00-07:00 in UTC
    assert event.data["expires"] == "2003-06-17T16:00:00-07:00"
    assert [g["value"] for g in event.data["areas"][0]["geocodes"]] == [
        "006109",
        "006009",
        "006003",
    ]
    assert event.time.isoformat() == "2003-06-17T21:57:00+00:00"


def test_two_info_blocks_become_two_events_with_stable_distinct_ids() -> None:
    xml = (DATA / "v1dot2_appendix_adot4.xml").read_bytes()
    first = events_from_cap(xml)
    again = events_from_cap(xml)
    assert [e.data["language"] for e in first] == ["en-US", "es-US"]
    assert len({e.id for e in first}) == 2
    assert [e.id for e in first] == [e.id for e in again]  # republishing dedupes downstream
    # geocode-only area: no routing geometry, the geocode is kept in data
    assert first[0].location is None
    assert first[0].data["areas"][0]["geocodes"] == [{"name": "SAME", "value": "006037"}]


def test_ids_differ_between_alerts_and_senders() -> None:
    a = events_from_cap(alert(info()))[0].id
    b = events_from_cap(alert(info()).replace("SEA-2026-0001", "SEA-2026-0002"))[0].id
    c = events_from_cap(alert(info()).replace("oem@seattle.gov", "spu@seattle.gov"))[0].id
    assert len({a, b, c}) == 3


def test_cap_11_feed_is_read_and_empty_polygon_means_no_shape() -> None:
    (event,) = events_from_cap((DATA / "nws-5c2cf27b1f56885d61654dc47fa411d5.xml").read_bytes())
    assert event.type == "cap.met" and event.data["event"] == "Blizzard Warning"
    assert event.location is None
    assert event.data["areas"][0]["polygons"] == []
    assert len(event.data["areas"][0]["geocodes"]) == 4


def test_cancel_without_info_becomes_one_message_event() -> None:
    (event,) = events_from_cap((DATA / "ipaws-5e6dd9de023f1930ef6548d9.xml").read_bytes())
    assert event.type == "cap.message"
    assert event.priority is Priority.HIGH
    assert event.data["msg_type"] == "Cancel"
    assert event.data["references"].startswith("bbrundage@dps.state.nv.us,AS-NV-e18921c7")


def test_info_less_test_and_ack_messages_are_not_urgent() -> None:
    assert events_from_cap(alert(status="Test", msg_type="Cancel"))[0].priority is Priority.BULK
    assert events_from_cap(alert(msg_type="Ack"))[0].priority is Priority.ROUTINE


def test_radius_zero_circle_is_a_point() -> None:
    (event,) = events_from_cap((DATA / "v1dot2_appendix_adot3.xml").read_bytes())
    assert event.type == "cap.geo"
    assert event.point() == (32.9525, -115.5527)
    assert event.priority is Priority.ROUTINE  # Past / Minor / Observed


def _metres(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def test_circle_becomes_polygon_with_radius_in_metres() -> None:
    area = "<area><areaDesc>Belltown</areaDesc><circle>47.6150,-122.3450 0.5</circle></area>"
    (event,) = events_from_cap(alert(info(area)))
    assert event.location is not None and event.location.type == "Polygon"
    ring = event.location.coordinates[0]
    assert ring[0] == ring[-1] and len(ring) == 65
    distances = [_metres(-122.3450, 47.6150, lon, lat) for lon, lat in ring]
    assert all(abs(d - 500) < 1 for d in distances)
    polygon = shape(event.location.model_dump())
    assert polygon.is_valid and polygon.exterior.is_ccw
    assert polygon.contains(Point(-122.3450, 47.6150))
    assert not polygon.contains(Point(-122.3450, 47.6200))  # ~560 m north: outside


def test_several_shapes_become_one_multipolygon() -> None:
    square = "47.60,-122.34 47.61,-122.34 47.61,-122.33 47.60,-122.33 47.60,-122.34"  # clockwise
    areas = (
        f"<area><areaDesc>A</areaDesc><polygon>{square}</polygon>"
        "<circle>47.62,-122.35 0</circle></area>"
        "<area><areaDesc>B</areaDesc><circle>47.65,-122.30 1</circle>"
        "<geocode><valueName>ZIP</valueName><value>98105</value></geocode></area>"
    )
    (event,) = events_from_cap(alert(info(areas)))
    assert event.location is not None and event.location.type == "MultiPolygon"
    geometry = shape(event.location.model_dump())
    assert len(geometry.geoms) == 3  # polygon, 1 km circle, radius-0 circle as a 1 m circle
    assert geometry.contains(Point(-122.335, 47.605))
    assert geometry.contains(Point(-122.30, 47.655))
    assert geometry.intersects(Point(-122.35, 47.62).buffer(1e-6))
    assert event.data["areas"][1]["geocodes"] == [{"name": "ZIP", "value": "98105"}]
    # the clockwise square was re-oriented counter-clockwise (RFC 7946)
    assert shape({"type": "Polygon", "coordinates": event.location.coordinates[0]}).exterior.is_ccw


def test_several_points_become_a_multipoint() -> None:
    areas = (
        "<area><areaDesc>A</areaDesc>"
        "<circle>47.6,-122.3 0</circle><circle>47.7,-122.4 0</circle></area>"
    )
    (event,) = events_from_cap(alert(info(areas)))
    assert event.location is not None and event.location.type == "MultiPoint"


@pytest.mark.parametrize(
    ("usc", "status", "msg_type", "expected"),
    [
        (("Immediate", "Extreme", "Observed"), "Actual", "Alert", Priority.EMERGENCY),
        (("Expected", "Severe", "Likely"), "Actual", "Update", Priority.EMERGENCY),
        (("Immediate", "Extreme", "Possible"), "Actual", "Alert", Priority.HIGH),
        (("Past", "Extreme", "Observed"), "Actual", "Alert", Priority.HIGH),
        (("Immediate", "Moderate", "Observed"), "Actual", "Alert", Priority.HIGH),
        (("Expected", "Moderate", "Likely"), "Actual", "Alert", Priority.ROUTINE),
        (("Unknown", "Unknown", "Unknown"), "Actual", "Alert", Priority.ROUTINE),
        (("Future", "Minor", "Unlikely"), "Actual", "Alert", Priority.BULK),
        (("Immediate", "Extreme", "Observed"), "Exercise", "Alert", Priority.EMERGENCY),
        (("Immediate", "Extreme", "Observed"), "Test", "Alert", Priority.BULK),
        (("Immediate", "Extreme", "Observed"), "Actual", "Cancel", Priority.HIGH),
        (("Immediate", "Extreme", "Observed"), "Actual", "Error", Priority.ROUTINE),
        (("Future", "Minor", "Unlikely"), "Actual", "Cancel", Priority.BULK),
    ],
)
def test_priority_table(usc, status, msg_type, expected) -> None:  # type: ignore[no-untyped-def]
    assert cap_priority(*usc, status=status, msg_type=msg_type) is expected
    (event,) = events_from_cap(alert(info(usc=usc), status=status, msg_type=msg_type))
    assert event.priority is expected


def test_category_decides_the_type_and_types_are_registered() -> None:
    for category in ("Geo", "Met", "Fire", "CBRNE", "Infra"):
        (event,) = events_from_cap(alert(info(category=category)))
        assert event.type == f"cap.{category.lower()}"
        assert event.type in CAP_TYPES
    assert set(CAP_TYPES).isdisjoint(BUILTIN_TYPES)
    assert all(model is CapPayload for model, _ in CAP_TYPES.values())


def test_resources_keep_metadata_but_not_embedded_content() -> None:
    extra = (
        "<resource><resourceDesc>map</resourceDesc><mimeType>image/png</mimeType><size>12</size>"
        "<derefUri>aGVsbG8=</derefUri></resource>"
    )
    (event,) = events_from_cap(alert(info(extra=extra)))
    assert event.data["resources"] == [
        {"desc": "map", "mime_type": "image/png", "size": 12, "deref_omitted": True}
    ]


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<alert", "not well-formed XML"),
        (b"<alert xmlns='urn:example'/>", "not a CAP 1.2 alert"),
        (alert(info(usc=("Soon", "Extreme", "Observed"))), "not valid CAP 1.2"),
        (alert(info()).replace("<status>Actual</status>", ""), "not valid CAP 1.2"),
        (
            alert(info()).replace("2026-11-25T10:00:00-08:00", "2026-11-25T18:00:00Z"),
            "not valid CAP 1.2",
        ),
        (
            alert(info()).replace("<identifier>SEA-2026-0001</identifier>", "<identifier/>"),
            "<identifier>",
        ),
        (alert(head="").replace("Public", "Restricted"), "requires a <restriction>"),
        (alert(head="").replace("Public", "Private"), "requires <addresses>"),
        (
            alert(info("<area><areaDesc>x</areaDesc><polygon>1,2 3,4 5,6</polygon></area>")),
            "at least 4",
        ),
        (
            alert(info("<area><areaDesc>x</areaDesc><polygon>1,2 3,4 5,6 1,3</polygon></area>")),
            "first and last",
        ),
        (
            alert(info("<area><areaDesc>x</areaDesc><polygon>1;2 3,4 5,6 1,2</polygon></area>")),
            "latitude,longitude",
        ),
        (
            alert(info("<area><areaDesc>x</areaDesc><polygon>91,2 3,4 5,6 91,2</polygon></area>")),
            "outside",
        ),
        (
            alert(info("<area><areaDesc>x</areaDesc><circle>47.6,-122.3</circle></area>")),
            "radius_km",
        ),
        (
            alert(info("<area><areaDesc>x</areaDesc><circle>47.6,-122.3 far</circle></area>")),
            "not a number",
        ),
        (alert(info("<area><areaDesc>x</areaDesc><circle>47.6,-122.3 -1</circle></area>")), ">= 0"),
        (
            alert(info("<area><areaDesc>x</areaDesc><circle>10,179.99 50</circle></area>")),
            "antimeridian",
        ),
        (alert(info(extra="<description>" + "x" * 70_000 + "</description>")), "event limit"),
    ],
)
def test_invalid_input_is_refused_with_a_clear_message(xml, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CapError, match=message):
        events_from_cap(xml)


def test_schema_errors_name_the_element() -> None:
    with pytest.raises(CapError) as caught:
        events_from_cap(alert(info(usc=("Soon", "Extreme", "Observed"))))
    assert "urgency" in str(caught.value) and "Soon" in str(caught.value)


def test_entity_expansion_attack_is_refused() -> None:
    bomb = """<?xml version="1.0"?>
<!DOCTYPE alert [
  <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
  <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
]>""" + alert(info()).split("?>", 1)[1].replace("Gas main rupture", "&c;")
    with pytest.raises(CapError, match="unsafe XML"):
        events_from_cap(bomb)


def test_external_entity_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not leak")
    xxe = f"""<?xml version="1.0"?>
<!DOCTYPE alert [<!ENTITY x SYSTEM "file://{secret}">]>""" + alert(info()).split("?>", 1)[
        1
    ].replace("Gas main rupture", "&x;")
    with pytest.raises(CapError, match="unsafe XML"):
        events_from_cap(xxe)


def test_oversized_document_is_refused() -> None:
    with pytest.raises(CapError, match="limit"):
        events_from_cap(b" " * (4 * 1024 * 1024 + 1))


def test_text_input_and_area_altitude() -> None:
    area = "<area><areaDesc>Tower</areaDesc><altitude>100</altitude><ceiling>300.5</ceiling></area>"
    (event,) = events_from_cap(alert(info(area)))
    assert event.data["areas"] == [{"desc": "Tower", "polygons": [], "circles": [], "geocodes": [],
                                   "altitude": 100.0, "ceiling": 300.5}]  # fmt: skip


def test_cap_11_very_likely_reads_as_likely() -> None:
    xml = alert(info(usc=("Immediate", "Severe", "Very Likely"))).replace("cap:1.2", "cap:1.1")
    (event,) = events_from_cap(xml)
    assert event.data["certainty"] == "Likely" and event.priority is Priority.EMERGENCY


def test_sender_too_long_for_an_event_source_is_refused() -> None:
    with pytest.raises(CapError, match="cannot become an event"):
        events_from_cap(alert(info()).replace("oem@seattle.gov", "x" * 300))


def test_documented_priority_table_matches_the_code() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "emergency.md").read_text()
    checked = 0
    for block in doc.split("Certainty **")[1:]:
        certainty = block.split("**", 1)[0]
        table = block.split("\n\n")[1]  # the table right under the heading
        rows = [line for line in table.splitlines() if line.startswith("| ")]
        severities = [cell.strip() for cell in rows[0].strip("|").split("|")][1:]
        for row in rows[1:]:
            urgency, *cells = [cell.strip() for cell in row.strip("|").split("|")]
            for severity, documented in zip(severities, cells, strict=True):
                assert cap_priority(urgency, severity, certainty).value == documented
                checked += 1
    assert checked == 125


def test_schema_location_hints_in_the_alert_are_not_fetched() -> None:
    xml = alert(info()).replace(
        '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">',
        '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        ' xsi:schemaLocation="urn:oasis:names:tc:emergency:cap:1.2 http://127.0.0.1:9/evil.xsd">',
    )
    (event,) = events_from_cap(xml)  # validated against the packaged schema only
    assert event.type == "cap.safety"


def test_alert_area_routes_to_the_real_precincts_it_covers() -> None:
    from city.geo import JurisdictionIndex, load_layer

    layers = Path(__file__).parents[2] / "examples" / "seattle" / "layers"
    index = JurisdictionIndex(load_layer("spd", layers / "spd-precincts.geojson", "name"))

    def names(event: Event) -> set[str]:
        assert event.location is not None
        hits = index.intersecting(shape(event.location.model_dump()))
        return {index.zones[i].name for i in hits}

    # a 300 m circle at Pike Place Market: one precinct; a 15 km circle on the city: all five
    small = "<area><areaDesc>Pike Place</areaDesc><circle>47.6097,-122.3422 0.3</circle></area>"
    (market,) = events_from_cap(alert(info(small)))
    assert len(names(market)) == 1
    assert names(market) == {index.zones[i].name for i in index.locate(47.6097, -122.3422)}
    large = "<area><areaDesc>City</areaDesc><circle>47.6097,-122.3422 15</circle></area>"
    (citywide,) = events_from_cap(alert(info(large)))
    assert len(names(citywide)) == len(index.zones) == 5
