"""Location-based subscriptions: departments' own areas, matched like jurisdictions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from shapely.geometry.base import BaseGeometry

from city.geo.config import AreaSubscription
from city.geo.index import JurisdictionIndex
from city.geo.layers import Zone


class AreaIndex:
    """Departments' own subscription areas, indexed like jurisdictions (H3 + exact check)."""

    LAYER = "area"

    def __init__(self, areas: Sequence[AreaSubscription], resolution: int = 10):
        self.areas = tuple(areas)
        zones = [Zone(self.LAYER, i, a.id, a.shape()) for i, a in enumerate(self.areas)]
        self._index = JurisdictionIndex(zones, resolution)

    def matching(
        self,
        lats: Sequence[float] | np.ndarray,
        lons: Sequence[float] | np.ndarray,
        cells: Sequence[Any] | np.ndarray | None = None,
    ) -> list[tuple[AreaSubscription, ...]]:
        """For each point, the subscription areas containing or touching it."""
        found = self._index.locate_many(lats, lons, cells=cells)
        return [tuple(self.areas[p] for p in hit) for hit in found]

    def intersecting(self, geometry: BaseGeometry) -> tuple[AreaSubscription, ...]:
        """The subscription areas a line or area touches."""
        return tuple(self.areas[p] for p in self._index.intersecting(geometry))
