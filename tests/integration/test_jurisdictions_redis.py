"""Redistricting while events flow, on a real Redis: nothing lost, each event routed by exactly
one version, the one in force at the event's own time."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import numpy as np
import pytest
from redis import Redis
from shapely.geometry import box, mapping

from city.geo import BEGINNING, Jurisdictions, LayerVersion, TieBreak
from queues.jurisdictions import JurisdictionStore, JurisdictionWatcher
from queues.keys import Keys

pytestmark = pytest.mark.integration


def doc(*named: tuple[str, object]) -> bytes:
    features = [
        {"type": "Feature", "geometry": mapping(g), "properties": {"name": n}} for n, g in named
    ]
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def wait_for(check, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.01)


OLD = doc(("west", box(0, 0, 0.01, 0.01)), ("east", box(0.01, 0, 0.02, 0.01)))
NEW = doc(("west", box(0, 0, 0.015, 0.01)), ("east", box(0.015, 0, 0.02, 0.01)))
MOVED = (0.005, 0.012)  # east of the old border, west of the new one


@pytest.fixture
def env():  # noqa: ANN201
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    keys = Keys(f"t{uuid4().hex[:8]}")
    store = JurisdictionStore(redis, keys)
    stream = f"{keys.prefix}:test:events"
    yield redis, store, stream
    store.delete_all()
    redis.delete(stream)
    assert redis.keys(f"{keys.prefix}:*") == []


def test_a_layer_republished_under_load_loses_and_misroutes_nothing(env) -> None:  # noqa: ANN001
    redis, store, stream = env
    base = Jurisdictions(
        [LayerVersion.from_geojson("pd", 0, BEGINNING, OLD, "name")],
        resolution=10,
        exclusive={"pd": TieBreak()},
    )
    stop = threading.Event()
    produced: list[str] = []

    def produce() -> None:
        rng = np.random.default_rng(1)
        while not stop.is_set():
            pipe = redis.pipeline(transaction=False)
            for _ in range(20):
                eid = uuid4().hex
                lat, lon = MOVED if rng.random() < 0.5 else tuple(rng.uniform(0, 0.01, 2) * (1, 2))
                lat, lon = float(lat), float(lon)
                now = datetime.now(UTC).isoformat()
                pipe.xadd(stream, {"id": eid, "lat": lat, "lon": lon, "time": now})
                produced.append(eid)
            pipe.execute()
            time.sleep(0.002)

    routed: dict[str, tuple[float, int, tuple[str, ...], float, float]] = {}
    done = threading.Event()
    errors: list[BaseException] = []

    def route() -> None:
        watcher = JurisdictionWatcher(store, base)
        last = "0-0"
        try:
            while True:
                batch = redis.xread({stream: last}, count=200, block=50)
                if not batch:
                    if done.is_set():
                        return
                    continue
                entries = batch[0][1]
                last = entries[-1][0]
                world = watcher.current()  # after reading the batch, before routing it
                fields = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]
                times = [datetime.fromisoformat(f["time"]) for f in fields]
                lats = [float(f["lat"]) for f in fields]
                lons = [float(f["lon"]) for f in fields]
                for f, t, a, o, loc in zip(
                    fields, times, lats, lons, world.locate_batch(lats, lons, times), strict=True
                ):
                    assert f["id"] not in routed, "routed twice"
                    names = tuple(z.name for z in loc.zones)
                    routed[f["id"]] = (t.timestamp(), loc.versions["pd"], names, a, o)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    producer = threading.Thread(target=produce)
    router = threading.Thread(target=route)
    producer.start()
    router.start()
    # Conditions, not sleeps: a loaded machine may run the producer thread late.
    wait_for(lambda: len(produced) >= 200, "events under the old lines")
    effective = datetime.now(UTC) + timedelta(milliseconds=300)
    number = store.publish(
        LayerVersion.from_geojson("pd", 0, effective, NEW, "name", note="2027 lines"), NEW
    )
    wait_for(lambda: datetime.now(UTC) > effective, "the new lines in force")
    in_force = len(produced)
    wait_for(lambda: len(produced) >= in_force + 200, "events under the new lines")
    stop.set()
    producer.join()
    done.set()
    router.join()

    assert errors == []
    assert number == 1
    assert set(routed) == set(produced) and len(produced) > 400  # zero lost, none invented
    cut = effective.timestamp()
    wrong = [
        eid for eid, (t, version, _, _, _) in routed.items() if version != (1 if t >= cut else 0)
    ]
    assert wrong == []
    versions = {v for _, v, _, _, _ in routed.values()}
    assert versions == {0, 1}
    for _, version, names, lat, lon in routed.values():
        if (lat, lon) == MOVED:
            assert names == (("west",) if version == 1 else ("east",))
        else:
            assert len(names) == 1  # exclusive layer: exactly one owner
