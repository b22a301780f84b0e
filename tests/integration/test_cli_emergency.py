"""`cityrelay publish --cap`, `cityrelay ack` and `cityrelay emergency status|list` as an
operator uses them, against a real Redis and the demo city."""

from __future__ import annotations

import json

import pytest

from queues.inbox import Inbox
from tests.conftest import ROOT
from tests.pipeline_harness import Harness
from tests.scenarios.emergency_city import cap_alert

pytestmark = pytest.mark.integration
CAP = ROOT / "tests" / "data" / "cap"


def test_dry_run_prints_the_events_and_publishes_nothing(cli, capsys, redis, keys, tmp_path):  # type: ignore[no-untyped-def]
    alert = tmp_path / "quake.xml"
    alert.write_bytes(cap_alert("dry-1"))
    assert cli("publish", "--dept", "emergency-management", "--cap", str(alert), "--dry-run") == 0
    (line,) = capsys.readouterr().out.splitlines()
    event = json.loads(line)
    assert event["type"] == "cap.geo" and event["priority"] == "emergency" and event["id"]
    assert event["location"]["type"] == "Polygon"  # GeoJSON, lon/lat
    assert event["location"]["coordinates"][0][0] == [-122.36, 47.58]
    assert redis.keys(f"{keys.prefix}:*") == []
    # an alert without an area has no routing geometry
    assert cli("publish", "--dept", "oem", "--cap", str(CAP / "v1dot2_appendix_adot1.xml"),
               "--dry-run") == 0  # fmt: skip
    assert "location" not in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<alert/>", "is not a valid CAP 1.2 alert"),
        (b"not xml at all", "is not a valid CAP 1.2 alert"),
        (None, "cannot read"),
    ],
)
def test_a_file_that_is_not_cap_exits_non_zero(cli, capsys, tmp_path, content, message):  # type: ignore[no-untyped-def]
    path = tmp_path / "alert.xml"
    if content is not None:
        path.write_bytes(content)
    assert cli("publish", "--dept", "oem", "--cap", str(path), "--dry-run") == 1
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


def test_publish_ack_and_status(cli, capsys, redis, keys, seattle, seattle_router, tmp_path):  # type: ignore[no-untyped-def]
    config, base = seattle
    path = tmp_path / "seattle-quake.xml"
    path.write_bytes(cap_alert(f"cli-{keys.prefix}"))
    assert cli("publish", "--dept", "emergency-management", "--cap", str(path)) == 0
    (published,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert published["priority"] == "emergency"
    event_id = published["id"]
    h = Harness(redis, keys, config, base, seattle_router)
    h.run()
    assert event_id in h.inbox_ids("fire") and event_id in h.inbox_ids("emergency-management")

    assert cli("ack", event_id, "--dept", "fire", "--by", "lt-ortiz") == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "acked"
    assert cli("ack", event_id, "--dept", "fire") == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "already"
    assert cli("ack", event_id, "--dept", "parks") == 1
    assert "did not receive" in capsys.readouterr().err
    assert cli("ack", "no-such-event", "--dept", "fire") == 1
    assert "no tracked emergency" in capsys.readouterr().err

    assert cli("emergency", "status", event_id) == 0
    table = capsys.readouterr().out
    fire_row = next(line for line in table.splitlines() if line.startswith("fire "))
    assert "acknowledged" in fire_row and "by cli:lt-ortiz" in fire_row
    oem_row = next(line for line in table.splitlines() if line.startswith("emergency-management"))
    assert "delivered" in oem_row
    assert cli("emergency", "status", "no-such-event") == 1
    assert "no tracked emergency" in capsys.readouterr().err

    Inbox(redis, "emergency-management", keys).read()  # read, not acknowledged yet
    assert cli("emergency", "list") == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["event"] == event_id and row["acknowledged"] == 1 and row["escalated"] == 0
    assert row["recipients"] >= 3
    redis.delete(keys.emergency(event_id))  # an expired record is skipped
    assert cli("emergency", "list") == 0 and capsys.readouterr().out == ""
