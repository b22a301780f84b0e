"""`cityrelay publish --cap FILE --raw`: the XML itself goes into the pipeline, as a feed bridge
sends it; ingest routes its events or dead-letters it (`cityrelay deadletters` says why)."""

from __future__ import annotations

import json

import pytest

from city.cap import events_from_cap
from queues.inbox import Inbox
from tests.pipeline_harness import Harness
from tests.scenarios.emergency_city import cap_alert

pytestmark = pytest.mark.integration
OEM = "emergency-management"


def test_raw_publish_is_routed_with_the_ids_the_parsed_path_gives(  # type: ignore[no-untyped-def]
    cli, capsys, redis, keys, seattle, seattle_router, tmp_path
):
    config, base = seattle
    path = tmp_path / "quake.xml"
    path.write_bytes(cap_alert(f"raw-{keys.prefix}"))
    (expected,) = [e.id for e in events_from_cap(path.read_bytes(), department=OEM)]

    assert cli("publish", "--dept", OEM, "--cap", str(path), "--raw", "--dry-run") == 0
    assert json.loads(capsys.readouterr().out) == {
        "lane": "emergency", "bytes": path.stat().st_size, "events": [expected]
    }  # fmt: skip
    assert redis.xlen(keys.ingest(OEM, "emergency")) == 0  # a dry run sends nothing

    assert cli("publish", "--dept", OEM, "--cap", str(path), "--raw") == 0
    sent = json.loads(capsys.readouterr().out)
    assert sent["lane"] == "emergency" and sent["entry"]
    Harness(redis, keys, config, base, seattle_router).run()
    assert [m.event_id for m in Inbox(redis, "fire", keys).history()] == [expected]


def test_raw_garbage_is_sent_and_dead_lettered_with_its_reason(  # type: ignore[no-untyped-def]
    cli, capsys, redis, keys, seattle, seattle_router, tmp_path
):
    config, base = seattle
    path = tmp_path / "evil.xml"
    path.write_bytes(
        b'<!DOCTYPE alert [<!ENTITY x SYSTEM "file:///etc/passwd">]><alert>&x;</alert>'
    )
    assert cli("publish", "--dept", OEM, "--cap", str(path), "--raw", "--dry-run") == 1
    assert "unsafe XML" in capsys.readouterr().err
    assert cli("publish", "--dept", OEM, "--cap", str(path), "--raw") == 0
    assert json.loads(capsys.readouterr().out)["lane"] == "routine"
    Harness(redis, keys, config, base, seattle_router).ingest_all()
    assert cli("deadletters") == 0
    (letter,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (letter["reason"], letter["dept"]) == ("unsafe_xml", OEM)
    assert letter["body"] == path.read_text() and "root:" not in letter["message"]
