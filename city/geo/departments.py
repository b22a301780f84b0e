"""Which departments answer for a set of zones, by their configured jurisdictions."""

from __future__ import annotations

from collections.abc import Iterable

from city.geo.citylike import CityLike
from city.geo.layers import Zone


def departments_for(config: CityLike, zones: Iterable[Zone]) -> dict[str, list[Zone]]:
    """Departments whose configured jurisdiction includes any of `zones`, with the zones why.

    A jurisdiction ref names a layer and zone names (by the layer's ``name_property``), or
    ``all`` zones of the layer.
    """
    zones = list(zones)
    out: dict[str, list[Zone]] = {}
    for dept in config.departments:
        for ref in dept.jurisdiction:
            for zone in zones:
                if zone.layer == ref.layer and (ref.zones == "all" or zone.name in ref.zones):
                    out.setdefault(dept.id, []).append(zone)
    return out
