"""Open data that no one can re-identify a citizen from.

Two releases:

- `aggregate`: counts per H3 cell and time bucket. A cell whose count is below `k` is rolled
  up into its parent (the parent row counts what its released children do not), resolution by
  resolution down to `min_resolution`; what still falls short is suppressed. With `epsilon`,
  each finest-level count first gets discrete Laplace noise of scale 1/epsilon (OpenDP when
  installed, else numpy's generator); roll-up and suppression then work on noisy counts only,
  so they are post-processing and the stated epsilon holds for the counts (which cells appear
  at all is protected by k, not by the noise).
- `records`: rows without direct identifiers or sensitive fields, the location as an H3
  cell and the time as a bucket, then k-anonymised over the declared quasi-identifiers by
  global recoding (coarser cells, then wider buckets), blanking quasi data fields (``*``) of
  rows still in small groups, and finally suppressing rows whose group is still under k.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import h3
import numpy as np

from city.privacy.config import LOCATION, TIME, TypePrivacy
from city.privacy.transforms import bucket_time, generalise_location

Key = tuple[str, str]  # (cell, time bucket)


def laplace_noise(counts: Sequence[int], epsilon: float, seed: int | None = None) -> list[int]:
    """Counts + discrete Laplace noise (sensitivity 1, scale 1/epsilon), clamped at 0."""
    scale = 1.0 / epsilon
    try:
        import opendp.prelude as dp

        dp.enable_features("contrib")
        measure = dp.m.make_laplace(
            dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=scale
        )
        noisy = list(measure(list(counts)))
    except ImportError:  # pragma: no cover - opendp is installed with the package
        rng = np.random.default_rng(seed)
        # The difference of two geometric variables is discrete Laplace.
        p = 1 - math.exp(-1 / scale)
        noisy = [c + int(rng.geometric(p) - rng.geometric(p)) for c in counts]
    return [max(0, int(v)) for v in noisy]


def noise_library() -> str:
    try:
        import opendp  # noqa: F401

        return "opendp"
    except ImportError:  # pragma: no cover
        return "numpy"


def cell_of(event: Mapping[str, Any], resolution: int) -> str | None:
    return generalise_location(event, resolution)


def aggregate(
    events: Iterable[Mapping[str, Any]],
    k: int = 10,
    resolution: int = 9,
    min_resolution: int = 5,
    bucket_s: int = 3600,
    epsilon: float | None = None,
) -> dict[str, Any]:
    """Counts per (H3 cell, time bucket), rolled up until each reaches `k`, else suppressed."""
    counts: Counter[Key] = Counter()
    unlocated = 0
    for event in events:
        cell = cell_of(event, resolution)
        if cell is None:
            unlocated += 1
            continue
        counts[(cell, bucket_time(event["time"], bucket_s))] += 1
    if epsilon is not None and counts:
        keys = list(counts)
        noisy = laplace_noise([counts[key] for key in keys], epsilon)
        counts = Counter(dict(zip(keys, noisy, strict=True)))
    rows: list[dict[str, Any]] = []
    pending = counts
    for res in range(resolution, min_resolution - 1, -1):
        short: Counter[Key] = Counter()
        for (cell, bucket), count in pending.items():
            if count >= k:
                rows.append({"cell": cell, "resolution": res, "bucket": bucket, "count": count})
            elif count > 0:  # too few: into the parent (what is left at the end: suppressed)
                up = cell if res == min_resolution else h3.cell_to_parent(cell, res - 1)
                short[(up, bucket)] += count
        pending = short
    suppressed = len(pending)
    rows.sort(key=lambda r: (r["bucket"], r["resolution"], r["cell"]))
    meta: dict[str, Any] = {
        "k": k,
        "resolution": resolution,
        "min_resolution": min_resolution,
        "bucket_seconds": bucket_s,
        "suppressed_groups": suppressed,
        "unlocated_events_left_out": unlocated,
        "rollup": "a coarser row counts the events of its cell not counted by finer rows",
        "epsilon": epsilon,
    }
    if epsilon is not None:
        meta["noise"] = {
            "mechanism": "discrete Laplace",
            "scale": 1 / epsilon,
            "sensitivity": 1,
            "library": noise_library(),
        }
    return {"meta": meta, "rows": rows}


def _bucket_ladder(bucket_s: int) -> list[int]:
    ladder = [bucket_s]
    for step in (3600, 6 * 3600, 86400, 7 * 86400):
        if step > ladder[-1]:
            ladder.append(step)
    return ladder


def records(
    events: Sequence[Mapping[str, Any]],
    tp: TypePrivacy,
    k: int = 10,
    resolution: int = 9,
    min_resolution: int = 5,
    bucket_s: int = 3600,
    max_suppression: float = 0.05,
) -> dict[str, Any]:
    """A k-anonymous record-level release over the type's quasi-identifiers."""
    classes = tp.classes()
    public = [f for f, c in tp.fields.items() if c == "public"]
    qi_fields = [q for q in tp.qi() if q not in (LOCATION, TIME) and tp.fields.get(q) == "quasi"]
    use_location = LOCATION in tp.qi() or classes[LOCATION] == "quasi"
    use_time = TIME in tp.qi() or classes[TIME] == "quasi"
    qi_columns = (["cell"] if use_location else []) + (["bucket"] if use_time else []) + qi_fields

    def build(res: int, bucket: int) -> list[dict[str, Any]]:
        out = []
        for event in events:
            data = event.get("data") or {}
            row: dict[str, Any] = {name: data.get(name) for name in public + qi_fields}
            if classes[LOCATION] in ("quasi", "public"):
                row["cell"] = cell_of(event, res)
            if classes[TIME] in ("quasi", "public"):
                row["bucket"] = bucket_time(event["time"], bucket)
            out.append(row)
        return out

    def small(rows: list[dict[str, Any]], columns: list[str]) -> int:
        groups = Counter(tuple(r.get(c) for c in columns) for r in rows)
        return sum(n for n in groups.values() if n < k)

    chosen: tuple[int, int] | None = None
    rows: list[dict[str, Any]] = []
    ladder = [
        (r, b) for b in _bucket_ladder(bucket_s) for r in range(resolution, min_resolution - 1, -1)
    ]
    for res, bucket in ladder:
        rows = build(res, bucket)
        if small(rows, qi_columns) <= max_suppression * max(1, len(rows)):
            chosen = (res, bucket)
            break
    if chosen is None:
        chosen = ladder[-1]
    # Blank quasi data fields of rows in small groups, then drop rows still in small groups.
    groups = Counter(tuple(r.get(c) for c in qi_columns) for r in rows)
    blanked = 0
    for row in rows:
        if groups[tuple(row.get(c) for c in qi_columns)] < k and qi_fields:
            for name in qi_fields:
                row[name] = "*"
            blanked += 1
    groups = Counter(tuple(r.get(c) for c in qi_columns) for r in rows)
    kept = [r for r in rows if groups[tuple(r.get(c) for c in qi_columns)] >= k]
    return {
        "meta": {
            "k": k,
            "quasi_identifiers": qi_columns,
            "resolution": chosen[0],
            "bucket_seconds": chosen[1],
            "blanked_rows": blanked,
            "suppressed_rows": len(rows) - len(kept),
            "columns": sorted({c for r in kept for c in r}) if kept else qi_columns + public,
        },
        "rows": kept,
    }


def smallest_group(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> int:
    """The size of the smallest equivalence class over `columns` (0 for no rows)."""
    groups: dict[tuple[Any, ...], int] = defaultdict(int)
    for row in rows:
        groups[tuple(row.get(c) for c in columns)] += 1
    return min(groups.values(), default=0)
