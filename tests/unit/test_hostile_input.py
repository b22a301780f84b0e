"""Hostile input at ingest: whatever arrives is accepted or dead-lettered with a reason, the
ingest never crashes, and nothing is left pending. The terminal summary says how many inputs
were tried."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queues.streams import EVENT_FIELD
from tests.conftest import HOSTILE_TRIED
from workers.ingest import IngestWorker

VALID = {
    "id": "e1",
    "source": "/city/sdot",
    "specversion": "1.0",
    "type": "traffic.incident",
    "time": "2026-11-25T10:00:00Z",
    "data": {"kind": "collision", "severity": 2},
    "location": {"lat": 47.6, "lon": -122.3},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


def deep(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = {"a": [value]}
    return value


# Valid RFC 3339 times whose UTC form may fall outside years 1..9999 (an OverflowError once
# crashed ingest instead of refusing the event).
times_near_the_edges = st.builds(
    lambda when, minutes: when.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat(),
    st.one_of(
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1, 1, 2)),
        st.datetimes(min_value=datetime(9999, 12, 31), max_value=datetime(9999, 12, 31, 23, 59)),
        st.datetimes(),
    ),
    st.integers(-1439, 1439),
)

mutations = st.one_of(
    st.builds(lambda k, v: {**VALID, k: v}, st.sampled_from(sorted(VALID)), json_values),
    st.builds(lambda k: {x: y for x, y in VALID.items() if x != k}, st.sampled_from(sorted(VALID))),
    st.builds(
        lambda lat, lon: {**VALID, "location": {"lat": lat, "lon": lon}},
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
    st.builds(
        lambda ring: {**VALID, "location": {"type": "Polygon", "coordinates": [ring]}},
        st.lists(st.tuples(st.floats(-180, 180), st.floats(-90, 90)).map(list), max_size=6),
    ),
    st.builds(
        lambda n: {**VALID, "data": {**VALID["data"], "description": "x" * n}},
        st.integers(0, 200_000),
    ),  # fmt: skip
    st.builds(lambda n: {**VALID, "data": deep(n)}, st.integers(1, 3000)),
    st.builds(lambda t: {**VALID, "type": t}, st.text(max_size=40)),
    st.builds(lambda t: {**VALID, "time": t}, st.text(max_size=40) | times_near_the_edges),
    st.builds(lambda d: {**VALID, "department": d}, st.text(min_size=1, max_size=20)),
    st.builds(lambda s: {**VALID, "source": s}, st.text(min_size=1, max_size=60)),
)


def encode(value: object) -> bytes:
    try:
        return json.dumps(value, allow_nan=True).encode()
    except (RecursionError, ValueError):
        return b"{" * 5000


bodies = st.one_of(
    mutations.map(encode),
    json_values.map(encode),
    st.binary(max_size=300),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=bodies)
def test_any_input_is_accepted_or_dead_lettered_with_a_reason(redis, keys, seattle, body):
    config, _ = seattle
    ingest = IngestWorker(redis, keys, config, consumer="hostile")
    stream = keys.ingest("sdot")
    before = redis.xlen(keys.deadletter)
    redis.xadd(stream, {EVENT_FIELD: body})
    counters = ingest.step(None)  # must not raise
    HOSTILE_TRIED["n"] += 1
    accepted = counters["accepted"] + counters["duplicates"]
    dead = redis.xlen(keys.deadletter) - before
    assert accepted + dead == 1
    if dead:
        ((_, fields),) = redis.xrevrange(keys.deadletter, count=1)
        assert fields[b"reason"] and fields[b"message"]
        assert fields[b"reason"] != b"decode_failed", fields[b"message"]  # a validation bug
        assert fields[b"body"] == body  # the original bytes, for whoever fixes the producer
    else:
        wire = json.loads(body)
        location = wire.get("location") or {}
        assert all(math.isfinite(v) for v in location.values() if isinstance(v, float))
    assert redis.xpending(stream, "router")["pending"] == 0
