"""jobs/views.py: the spliced view JSON is byte for byte the encoded `view` dict."""

from __future__ import annotations

import orjson
import pytest

from city.sharing import Decision, view
from jobs.views import split_on_data, view_json

EVENT = {
    "id": "e-1",
    "source": "/city/transit",
    "type": "transit.vehicle_position",
    "data": {"vehicle_id": "bus-1", "route": "7", "speed_kmh": 31.5, "note": 'é \u2028 "q"'},
    "location": {"lat": 47.6, "lon": -122.3},
    "department": "transit",
    "priority": "bulk",
}

DECISIONS = [
    Decision(True, "policy", "traffic"),
    Decision(True, "policy", "traffic", fields=frozenset({"route", "missing"})),
    Decision(True, "policy", "traffic", redact=frozenset({"vehicle_id"})),
    Decision(True, "grant", "ops", grant="g-1", fields=frozenset(), break_glass=True),
    Decision(True, "grant", "ops", break_glass=True),
]


@pytest.mark.parametrize("decision", DECISIONS)
@pytest.mark.parametrize(
    "event",
    [EVENT, {**EVENT, "data": {}}, {k: v for k, v in EVENT.items() if k != "location"}
     | {"data": EVENT["data"]}],  # data last
)  # fmt: skip
def test_splice_equals_the_view_encoded(event: dict, decision: Decision) -> None:
    parts = split_on_data(event)
    assert parts is not None
    assert view_json(event, parts, decision) == orjson.dumps(view(event, decision)).decode()
    assert "".join(parts) + "}" == orjson.dumps(event).decode()


@pytest.mark.parametrize(
    "event",
    [
        {**EVENT, "data": None},
        {**EVENT, "data": [1, 2]},
        {**EVENT, "purpose": "own"},
        {**EVENT, "breakglass": True},
        {**EVENT, "subject": "\x00cityrelay-view-data\x00"},
    ],
)
def test_events_the_splice_cannot_reproduce_take_the_dict_path(event: dict) -> None:
    assert split_on_data(event) is None
