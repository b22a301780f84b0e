"""Redistricting through the pipeline: each event follows the boundaries of its own time."""

import json
from datetime import UTC, datetime, timedelta

from city.events import Event, source_for
from city.geo import LayerVersion
from queues.inbox import Inbox
from queues.jurisdictions import JurisdictionStore
from queues.streams import Producer
from tests.conftest import SEATTLE
from tests.pipeline_harness import Harness

CENTER = {"lat": 47.6205, "lon": -122.3493}  # in the West precinct today


def test_late_and_new_events_follow_the_boundaries_of_their_own_time(
    redis, keys, seattle, seattle_router
):
    config, base = seattle
    harness = Harness(redis, keys, config, base, seattle_router)
    change_at = datetime.now(UTC) + timedelta(minutes=5)
    # The new precinct map: the West precinct's area is handed to East (names swapped).
    doc = json.loads((SEATTLE.parent / "layers" / "spd-precincts.geojson").read_text())
    for feature in doc["features"]:
        swap = {"W": "E", "E": "W"}
        feature["properties"]["name"] = swap.get(
            feature["properties"]["name"], feature["properties"]["name"]
        )
    raw = json.dumps(doc).encode()
    version = LayerVersion.from_geojson("precincts", 0, change_at, raw, "name")
    assert JurisdictionStore(redis, keys).publish(version, raw) == 1

    def incident(at):
        data = {"kind": "hazard", "severity": 2}
        return Event.new("traffic.incident", source_for("sdot"), data, location=CENTER, time=at)

    before, after = incident(change_at - timedelta(seconds=1)), incident(change_at)
    Producer(redis, "sdot", keys).publish_many([after, before])
    harness.run()
    west = {m.event_id: m.via for m in Inbox(redis, "spd-west", keys).history(10)}
    east = {m.event_id: m.via for m in Inbox(redis, "spd-east", keys).history(10)}
    assert list(west) == [before.id] and list(east) == [after.id]
    assert west[before.id]["versions"]["precincts"] == 0
    assert east[after.id]["versions"]["precincts"] == 1
