"""Hourly event counts per H3 cell: what an ``aggregate`` series keeps of a window once it
leaves the hot tier (instead of the events themselves).
"""

from __future__ import annotations

from collections import Counter

import h3
import pyarrow as pa
import pyarrow.compute as pc

from jobs import lake


def aggregate_counts(events: pa.Table, resolution: int) -> pa.Table:
    """Hourly event counts per H3 cell: the only thing an ``aggregate`` series keeps."""
    counts: Counter[tuple[int, str | None]] = Counter()
    hours = pc.floor_temporal(events.column("time"), unit="hour").cast(pa.int64()).to_pylist()
    lats = events.column("lat").to_pylist()
    lons = events.column("lon").to_pylist()
    cells = events.column("h3cell").to_pylist()
    for hour, lat, lon, cell in zip(hours, lats, lons, cells, strict=True):
        if lat is not None:
            cell = h3.latlng_to_cell(lat, lon, resolution)
        elif cell is not None and h3.get_resolution(cell) > resolution:
            cell = h3.cell_to_parent(cell, resolution)
        counts[(hour // 1_000_000, cell)] += 1
    ordered = sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
    event_type = events.column("type")[0].as_py() if events.num_rows else ""
    return pa.Table.from_arrays(
        [
            pa.array([event_type] * len(ordered), pa.string()),
            pa.array([k[0] for k, _ in ordered], pa.int64()).cast(pa.timestamp("s", tz="UTC")),
            pa.array([k[1] for k, _ in ordered], pa.string()),
            pa.array([v for _, v in ordered], pa.int64()),
        ],
        schema=lake.AGGREGATE_SCHEMA,
    )
