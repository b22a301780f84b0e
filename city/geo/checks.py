"""Checks a new layer version must pass before it is published (errors) or is worth a look at.

Used by ``cityrelay jurisdictions publish`` before the version goes to the store.
"""

from __future__ import annotations

import numpy as np
import shapely

from city.geo.citylike import CityLike
from city.geo.measure import area_m2
from city.geo.versions import LayerVersion


def validate_version(
    new: LayerVersion, config: CityLike | None = None, exclusive: bool = False
) -> tuple[list[str], list[str]]:
    """Problems that block a publish (errors) and ones worth a look (warnings)."""
    errors: list[str] = []
    warnings: list[str] = []
    names = [z.name for z in new.zones]
    for z in new.zones:
        if z.repaired:
            warnings.append(f"{z.ref} ({z.name}): invalid geometry in the file, repaired")
    if config is not None:
        for dept in config.departments:
            for ref in dept.jurisdiction:
                if ref.layer == new.layer and ref.zones != "all":
                    for zname in ref.zones:
                        if zname not in names:
                            errors.append(
                                f"department {dept.id!r} answers for zone {zname!r}, "
                                "which the new version no longer has"
                            )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        warnings.append(f"zone names used by more than one feature: {', '.join(dupes)}")
    if exclusive:
        geoms = np.array([z.geometry for z in new.zones], dtype=object)
        tree = shapely.STRtree(geoms)
        left, right = tree.query(geoms, predicate="intersects")
        for i, j in zip(left.tolist(), right.tolist(), strict=True):
            if i < j:
                overlap = area_m2(geoms[i].intersection(geoms[j]))
                if overlap >= 1.0:
                    warnings.append(
                        f"exclusive layer: {new.zones[i].name!r} and {new.zones[j].name!r} "
                        f"overlap by {overlap:.0f} m² (the tie-break decides there)"
                    )
    return errors, warnings
