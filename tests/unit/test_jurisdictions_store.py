"""Layer versions in Redis: atomic numbered publishes, history, and workers that notice cheaply."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from shapely.geometry import box, mapping

from city.geo import BEGINNING, Jurisdictions, LayerVersion
from queues.jurisdictions import JurisdictionStore, JurisdictionWatcher, PublishError
from queues.keys import Keys

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def doc(*named: tuple[str, object]) -> bytes:
    features = [
        {"type": "Feature", "geometry": mapping(g), "properties": {"name": n}} for n, g in named
    ]
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


OLD = doc(("west", box(0, 0, 0.01, 0.01)), ("east", box(0.01, 0, 0.02, 0.01)))
NEW = doc(("west", box(0, 0, 0.015, 0.01)), ("east", box(0.015, 0, 0.02, 0.01)))


def publish(store: JurisdictionStore, raw: bytes, at: datetime, note: str = "") -> int:
    v = LayerVersion.from_geojson("pd", 0, at, raw, "name", note=note)
    return store.publish(v, raw)


@pytest.fixture
def store() -> JurisdictionStore:
    return JurisdictionStore(fakeredis.FakeRedis(), Keys("t"))


def test_publishes_are_numbered_and_kept_with_their_metadata(store: JurisdictionStore) -> None:
    assert store.generation() == 0
    assert publish(store, OLD, T0, "initial") == 1
    assert publish(store, NEW, T0 + timedelta(days=1), "redistricting 2027") == 2
    assert store.generation() == 2
    assert store.layers() == ["pd"]
    history = store.history("pd")
    assert [(i.version, i.note, i.features) for i in history] == [
        (1, "initial", 2),
        (2, "redistricting 2027", 2),
    ]
    assert history[1].effective_from == T0 + timedelta(days=1)
    assert history[1].as_dict()["effective_from"] == "2026-11-26T12:00:00+00:00"
    assert store.geojson("pd", 2) == NEW
    loaded = store.load("pd", 2)
    assert loaded.version == 2 and loaded.zones[0].name == "west"
    assert loaded.checksum == history[1].checksum


def test_effective_times_only_move_forward(store: JurisdictionStore) -> None:
    publish(store, OLD, T0)
    with pytest.raises(PublishError, match="before the latest version"):
        publish(store, NEW, T0 - timedelta(seconds=1))
    assert store.generation() == 1 and [i.version for i in store.history("pd")] == [1]


def test_missing_versions_are_named(store: JurisdictionStore) -> None:
    with pytest.raises(KeyError, match="no published version 3"):
        store.geojson("pd", 3)
    with pytest.raises(KeyError, match="no published version 3"):
        store.load("pd", 3)
    assert store.load_all() == []


def test_damaged_store_is_an_error_not_a_silent_drop(store: JurisdictionStore) -> None:
    publish(store, OLD, T0)
    store.redis.delete(store.keys.juris_data("pd", 1))
    with pytest.raises(KeyError, match="data missing"):
        store.load_all()


def test_other_redis_errors_pass_through(store: JurisdictionStore) -> None:
    store.redis.set(store.keys.juris_seq("pd"), "not a hash")
    with pytest.raises(Exception, match="WRONGTYPE"):
        publish(store, OLD, T0)


def test_watcher_picks_up_new_versions_without_restart(store: JurisdictionStore) -> None:
    base = Jurisdictions([LayerVersion.from_geojson("pd", 0, BEGINNING, OLD, "name")], 9)
    watcher = JurisdictionWatcher(store, base)
    first = watcher.current()
    assert first is base
    assert watcher.current() is first  # nothing published: same object, one GET
    publish(store, NEW, T0)
    second = watcher.current()
    assert second is not first
    assert [v.version for v in second.history("pd")] == [0, 1]
    # indexes for now and for the new effective time are built at pickup, not mid-batch
    assert (("pd", 1),) in second._combos
    assert watcher.current() is second
    # an in-flight batch keeps the old object and its answers
    assert first.locate(0.005, 0.012, at=T0).versions == {"pd": 0}
    assert second.locate(0.005, 0.012, at=T0).zones[0].name == "west"


def test_delete_all_removes_only_this_prefix(store: JurisdictionStore) -> None:
    other = JurisdictionStore(store.redis, Keys("other"))
    publish(store, OLD, T0)
    publish(other, OLD, T0)
    store.delete_all()
    assert all(not k.startswith(b"t:") for k in store.redis.keys("*"))
    assert other.layers() == ["pd"]
