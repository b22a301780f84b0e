"""Redistricting's coverage diff: which area each zone gains and loses between two versions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

from city.geo.measure import area_m2
from city.geo.versions import LayerVersion


@dataclass(frozen=True)
class CoverageChange:
    """What area changes hands between two versions of a layer, by zone name (m²)."""

    layer: str
    old_version: int
    new_version: int
    gained: dict[str, float]
    lost: dict[str, float]
    transfers: list[tuple[str, str, float]]  # (from zone, to zone, m²); "" = no zone
    added: list[str]
    removed: list[str]

    @property
    def changed_m2(self) -> float:
        return sum(self.lost.values()) + sum(a for f, _, a in self.transfers if f == "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "from_version": self.old_version,
            "to_version": self.new_version,
            "changed_m2": round(self.changed_m2, 1),
            "added": self.added,
            "removed": self.removed,
            "gained_m2": {k: round(v, 1) for k, v in self.gained.items()},
            "lost_m2": {k: round(v, 1) for k, v in self.lost.items()},
            "transfers": [
                {"from": f or None, "to": t or None, "m2": round(a, 1)}
                for f, t, a in self.transfers
            ],
        }


def _by_name(version: LayerVersion) -> dict[str, BaseGeometry]:
    groups: dict[str, list[BaseGeometry]] = {}
    for z in version.zones:
        groups.setdefault(z.name, []).append(z.geometry)
    return {k: g[0] if len(g) == 1 else shapely.union_all(g) for k, g in groups.items()}


def coverage_diff(old: LayerVersion, new: LayerVersion, min_m2: float = 1.0) -> CoverageChange:
    """Which area each zone gains and loses, and from whom to whom (pieces under `min_m2` dropped).

    Zones are matched by name, which is what departments' jurisdictions refer to.
    """
    a, b = _by_name(old), _by_name(new)
    empty = shapely.Polygon()
    gained_geom = {k: g.difference(a.get(k, empty)) for k, g in b.items()}
    lost_geom = {k: g.difference(b.get(k, empty)) for k, g in a.items()}
    gained = {k: area_m2(g) for k, g in gained_geom.items()}
    lost = {k: area_m2(g) for k, g in lost_geom.items()}
    transfers: list[tuple[str, str, float]] = []
    old_all = shapely.union_all(list(a.values()))
    new_all = shapely.union_all(list(b.values()))
    for src, lg in lost_geom.items():
        if lost[src] < min_m2:
            continue
        for dst, gg in gained_geom.items():
            if gained[dst] >= min_m2 and lg.intersects(gg):
                moved = area_m2(lg.intersection(gg))
                if moved >= min_m2:
                    transfers.append((src, dst, moved))
        orphaned = area_m2(lg.difference(new_all))
        if orphaned >= min_m2:
            transfers.append((src, "", orphaned))
    for dst, gg in gained_geom.items():
        fresh = area_m2(gg.difference(old_all)) if gained[dst] >= min_m2 else 0.0
        if fresh >= min_m2:
            transfers.append(("", dst, fresh))
    return CoverageChange(
        layer=new.layer,
        old_version=old.version,
        new_version=new.version,
        gained={k: v for k, v in gained.items() if v >= min_m2},
        lost={k: v for k, v in lost.items() if v >= min_m2},
        transfers=sorted(transfers, key=lambda x: -x[2]),
        added=sorted(set(b) - set(a)),
        removed=sorted(set(a) - set(b)),
    )
