"""The envelope refuses what would break routing and keeps CloudEvents extensions."""

from datetime import datetime

import pytest
from pydantic import ValidationError

from city.events import Event, Priority, source_for


def make(**overrides):
    base = {
        "id": "e1",
        "source": "/city/sdot",
        "type": "traffic.incident",
        "time": "2026-11-25T10:00:00Z",
        "data": {"kind": "collision", "severity": 2},
    }
    base.update(overrides)
    return Event.model_validate(base)


def test_new_fills_id_and_time_and_round_trips_on_the_wire():
    event = Event.new("traffic.incident", source_for("sdot"), {"kind": "hazard", "severity": 1})
    assert len(event.id) == 32 and event.time.tzinfo is not None
    again = Event.model_validate(event.to_wire())
    assert again == event


@pytest.mark.parametrize(
    "location",
    [
        {"lat": float("nan"), "lon": 0},
        {"lat": 91, "lon": 0},
        {"lat": 0, "lon": -181},
        {"type": "Point", "coordinates": [200, 10]},
        {"type": "LineString", "coordinates": []},
        {"type": "Polygon", "coordinates": [[[0, 0], [1, "x"]]]},
        {"type": "Polygon", "coordinates": [[[[[[0, 0]]]]]]},
        {"type": "Point", "coordinates": [1]},
        {"type": "Circle", "coordinates": [1, 2]},
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
        {"type": "LineString", "coordinates": [[0, 0]]},
    ],
)
def test_impossible_locations_are_refused(location):
    with pytest.raises(ValidationError):
        make(location=location)


def test_point_is_read_from_either_location_form():
    assert make(location={"lat": 47.6, "lon": -122.3}).point() == (47.6, -122.3)
    assert make(location={"type": "Point", "coordinates": [-122.3, 47.6]}).point() == (47.6, -122.3)
    line = {"type": "LineString", "coordinates": [[-122.3, 47.6], [-122.31, 47.61]]}
    assert make(location=line).point() is None
    assert make().point() is None


def test_time_without_zone_is_refused_and_zoned_time_is_normalised_to_utc():
    with pytest.raises(ValidationError, match="timezone"):
        make(time="2026-11-25T10:00:00")
    assert make(time="2026-11-25T12:00:00+02:00").time == datetime.fromisoformat(
        "2026-11-25T10:00:00+00:00"
    )


def test_type_must_be_dotted_words():
    with pytest.raises(ValidationError, match="dotted"):
        make(type="TrafficIncident")


def test_extensions_are_kept_when_well_formed_and_refused_otherwise():
    assert make(correlationid="abc").model_extra == {"correlationid": "abc"}
    with pytest.raises(ValidationError, match="names are"):
        make(**{"Bad-Name": "x"})
    with pytest.raises(ValidationError, match="string, integer or bool"):
        make(nested={"a": 1})


def test_priorities_are_ordered():
    ranks = [p.rank for p in (Priority.EMERGENCY, Priority.HIGH, Priority.ROUTINE, Priority.BULK)]
    assert ranks == sorted(ranks)
