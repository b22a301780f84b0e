"""Open data: k-suppressed aggregates with roll-up, Laplace noise, k-anonymous records.

The k-anonymity of releases is checked independently with a pandas group-by over the
declared quasi-identifiers (not with the module's own helper).
"""

from __future__ import annotations

import random

import h3
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from city.privacy import opendata, parse_privacy
from tests.privacy_city import PRIVACY, incident


def town(n: int = 400, seed: int = 7) -> list[dict]:
    """Incidents clustered around a few Seattle spots, with some lonely outliers."""
    rng = random.Random(seed)
    spots = [(47.6205, -122.3493), (47.6097, -122.3331), (47.6686, -122.3860)]
    roads = ["Aurora Ave N", "5th Ave", "Market St", "Rare Lane"]
    out = []
    for i in range(n):
        lat, lon = rng.choice(spots)
        if i % 40 == 0:  # outliers far from the clusters
            lat, lon = 47.5 + rng.random() / 10, -122.4 + rng.random() / 10
        out.append(
            incident(
                f"e-{i}",
                plate=f"P{i}",
                time=f"2026-11-25T{10 + rng.randrange(3):02d}:{rng.randrange(60):02d}:00Z",
                lat=lat + rng.gauss(0, 0.0005),
                lon=lon + rng.gauss(0, 0.0005),
                road=rng.choice(roads) if i % 10 else "Rare Lane",
            )
        )
    return out


def min_group(rows: list[dict], columns: list[str]) -> int:
    frame = pd.DataFrame(rows)
    return int(frame.groupby(columns, dropna=False).size().min())


def test_aggregates_roll_up_then_suppress() -> None:
    events = town()
    out = opendata.aggregate(events, k=10, resolution=9, min_resolution=6, bucket_s=3600)
    rows = out["rows"]
    assert rows and all(r["count"] >= 10 for r in rows)
    assert {r["resolution"] for r in rows} > {9}  # some cells needed rolling up
    released = sum(r["count"] for r in rows)
    assert released < len(events)  # the outliers stayed suppressed
    assert out["meta"]["suppressed_groups"] > 0 and out["meta"]["epsilon"] is None
    # No row carries anything but the cell, its resolution, the bucket and the count.
    assert all(set(r) == {"cell", "resolution", "bucket", "count"} for r in rows)
    # The roll-up never invents events: per bucket, released <= true counts.
    truth = pd.DataFrame(
        {"bucket": [opendata.bucket_time(e["time"], 3600) for e in events]}
    ).value_counts()
    for bucket, group in pd.DataFrame(rows).groupby("bucket"):
        assert group["count"].sum() <= truth[bucket]
    # Rows are cells of the stated resolution.
    assert all(h3.get_resolution(r["cell"]) == r["resolution"] for r in rows)


def test_aggregates_with_laplace_noise_state_epsilon() -> None:
    out = opendata.aggregate(town(), k=10, epsilon=0.5)
    assert out["meta"]["epsilon"] == 0.5
    assert out["meta"]["noise"]["mechanism"] == "discrete Laplace"
    assert out["meta"]["noise"]["scale"] == 2.0
    assert all(r["count"] >= 10 for r in out["rows"])
    assert opendata.laplace_noise([0, 0, 0], 1.0) >= [0, 0, 0]


def test_unlocated_events_are_left_out_and_counted() -> None:
    event = {k: v for k, v in incident().items() if k != "location"}
    out = opendata.aggregate([event], k=2)
    assert out["rows"] == [] and out["meta"]["unlocated_events_left_out"] == 1


@pytest.fixture
def tp():
    return parse_privacy(PRIVACY).types["traffic.incident"]  # type: ignore[union-attr]


def test_records_are_k_anonymous_over_the_declared_quasi_identifiers(tp) -> None:
    out = opendata.records(town(), tp, k=5, resolution=9, min_resolution=6, bucket_s=3600)
    rows, meta = out["rows"], out["meta"]
    assert rows and meta["quasi_identifiers"] == ["cell", "bucket", "road"]
    assert min_group(rows, meta["quasi_identifiers"]) >= 5
    # No direct identifiers or sensitive fields in a public release.
    assert all("plate" not in r and "description" not in r for r in rows)
    assert {"kind", "severity"} <= set(rows[0])
    assert opendata.smallest_group(rows, meta["quasi_identifiers"]) >= 5
    assert opendata.smallest_group([], ["cell"]) == 0


def test_records_fall_back_to_the_coarsest_level(tp) -> None:
    few = town(6)
    out = opendata.records(few, tp, k=10, resolution=9, min_resolution=8, bucket_s=3600)
    assert out["rows"] == [] and out["meta"]["suppressed_rows"] == 6
    assert out["meta"]["bucket_seconds"] == 7 * 86400 and out["meta"]["resolution"] == 8


@settings(max_examples=40, deadline=None)
@given(
    points=st.lists(
        st.tuples(st.floats(47.60, 47.62), st.floats(-122.36, -122.34), st.integers(0, 5)),
        max_size=60,
    ),
    k=st.integers(2, 12),
)
def test_aggregate_invariants(points, k) -> None:
    events = [
        incident(f"e-{i}", lat=lat, lon=lon, time=f"2026-11-25T1{hour}:00:00Z")
        for i, (lat, lon, hour) in enumerate(points)
    ]
    rows = opendata.aggregate(events, k=k, resolution=9, min_resolution=7)["rows"]
    assert all(r["count"] >= k for r in rows)
    assert sum(r["count"] for r in rows) <= len(events)
    # With k=1 nothing is suppressed: every event is counted exactly once.
    everything = opendata.aggregate(events, k=1, resolution=9, min_resolution=7)["rows"]
    assert sum(r["count"] for r in everything) == len(events)
