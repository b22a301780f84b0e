"""Privacy through the real route job: the PIA gate, per-recipient views, consent, audit."""

import json

import shapely

from city.geo import Zone
from city.routing import Router
from jobs.context import RouteContext
from jobs.route import deliver_items
from queues.audit import AuditLog
from tests.privacy_city import city, incident, write_keys
from tests.scenarios.test_privacy_views import approve_cameras


def inbox(redis, keys, dept):
    return [json.loads(f[b"e"]) for _, f in redis.xrange(keys.inbox(dept))]


def test_route_job_gates_on_the_pia_then_sends_each_recipient_its_view(redis, keys, tmp_path):
    config = city()
    write_keys(tmp_path / "keys.json")
    town = shapely.box(-122.5, 47.4, -122.2, 47.8)
    router = Router.from_zones(config, [Zone("city", 0, "#0", town)])
    context = RouteContext(config=config, router=router, keys=keys, base_dir=tmp_path)

    counters = deliver_items(
        context, redis, [{"e": incident("cam-1", plate="KXT 4410"), "ing": "1-0"}]
    )
    assert counters["quarantined"] == 1 and redis.xlen(keys.quarantine) == 1
    assert all(inbox(redis, keys, d) == [] for d in ("police", "transport", "parks"))

    approve_cameras(redis, keys, (config,))
    counters = deliver_items(
        context, redis, [{"e": incident("cam-2", plate="KXT 4410"), "ing": "2-0"}]
    )
    (police,) = inbox(redis, keys, "police")
    (transport,) = inbox(redis, keys, "transport")
    (parks,) = inbox(redis, keys, "parks")
    assert police["data"]["plate"] == "KXT 4410"  # investigation: the plate itself
    assert transport["data"]["plate"] != "KXT 4410" and "KXT" not in json.dumps(transport)
    assert "plate" not in parks["data"]  # consent basis, no consent: personal fields stripped
    assert inbox(redis, keys, "transit") == [] and counters["withheld"] == 1  # withheld

    rows = [
        r
        for rec in AuditLog(redis, keys).records()
        if rec.kind == "delivery"
        for r in rec.body["rows"]
    ]
    transport_row = next(r for r in rows if r[0] == "cam-2" and r[1] == "transport")
    assert transport_row[8][0] == transport["privacy"]  # which transform shaped the view
    assert AuditLog(redis, keys).verify().ok
