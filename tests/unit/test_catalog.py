"""Ingest validation: each refusal carries a reason a user can act on."""

import copy
import json

import pytest

from city.catalog import EventCatalog, InvalidEvent
from city.config import parse_city
from tests.unit.test_config import BASE

GOOD = {
    "id": "e1",
    "source": "/city/sdot/cameras",
    "specversion": "1.0",
    "type": "traffic.incident",
    "time": "2026-11-25T10:00:00Z",
    "data": {"kind": "collision", "severity": 2},
    "location": {"lat": 47.6, "lon": -122.3},
}


def accept(event, dept="sdot", catalog=None):
    raw = event if isinstance(event, (bytes, str)) else json.dumps(event)
    return (catalog or EventCatalog()).accept(raw, dept)


def reason(event, dept="sdot", catalog=None):
    with pytest.raises(InvalidEvent) as info:
        accept(event, dept, catalog)
    return info.value.reason, str(info.value)


def test_valid_event_gets_department_and_type_priority():
    wire = accept(GOOD)
    assert wire["department"] == "sdot" and wire["priority"] == "high"
    assert wire["data"] == {"kind": "collision", "severity": 2}


def test_explicit_priority_wins():
    assert accept({**GOOD, "priority": "emergency"})["priority"] == "emergency"


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"{not json", "malformed_json"),
        ({**GOOD, "time": "yesterday"}, "invalid_envelope"),
        ({**GOOD, "type": "parking.violation"}, "unknown_type"),
        ({**GOOD, "data": {"kind": "collision"}}, "invalid_payload"),
        ({**GOOD, "data": {"kind": "collision", "severity": 2, "ssn": "x"}}, "invalid_payload"),
        ({**GOOD, "department": "police"}, "forged_source"),
        ({**GOOD, "source": "/city/police/cad"}, "forged_source"),
        (
            {**GOOD, "data": {"kind": "collision", "severity": 2, "description": "x" * 70000}},
            "too_large",
        ),
    ],
)
def test_bad_input_is_refused_with_its_reason(raw, expected):
    assert reason(raw)[0] == expected


def test_unknown_type_message_says_where_to_register_it():
    assert "event_types:" in reason({**GOOD, "type": "parking.violation"})[1]


def test_many_payload_errors_are_summarised():
    code, message = reason({**GOOD, "data": {"a": 1, "b": 2, "c": 3, "d": 4}})
    assert code == "invalid_payload" and "more)" in message


def test_config_registers_new_types_and_overrides_priorities():
    doc = copy.deepcopy(BASE)
    doc["event_types"] = {
        "parking.violation": {"priority": "bulk", "fields": {"zone": "str", "fine": "float?"}},
        "traffic.incident": {"priority": "emergency"},
    }
    catalog = EventCatalog(parse_city(doc))
    wire = accept({**GOOD, "type": "parking.violation", "data": {"zone": "A"}}, catalog=catalog)
    assert wire["priority"] == "bulk"
    assert reason({**GOOD, "type": "parking.violation", "data": {}}, catalog=catalog)[0] == (
        "invalid_payload"
    )
    assert catalog.priority_of("traffic.incident") == "emergency"
    assert catalog.priority_of("nothing.known") == "routine"
