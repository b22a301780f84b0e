"""What `cityrelay locate` and the gateway's `GET /v1/locate` answer for a point: the zones
containing it under the layer versions in force at a time, whether it lies on a border,
exclusive-layer ties, and each department that answers for it, with why."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import shapely

from city.geo.citylike import CityLike
from city.geo.departments import departments_for
from city.geo.jurisdictions import Jurisdictions


def location_report(
    world: Jurisdictions, city: CityLike, lat: float, lon: float, at: datetime
) -> dict[str, Any]:
    located = world.locate(lat, lon, at)
    point = shapely.Point(lon, lat)
    zones = [
        {
            "zone": z.ref,
            "layer": z.layer,
            "name": z.name,
            "version": located.versions[z.layer],
            "on_border": bool(z.geometry.boundary.distance(point) < 1e-9),
        }
        for z in located.zones
    ]
    return {
        "lat": lat,
        "lon": lon,
        "at": at.isoformat(),
        "versions": dict(located.versions),
        "zones": zones,
        "ties": {k: list(v) for k, v in located.ties.items()},
        "departments": [
            {
                "id": dept,
                "why": [
                    f"answers for {z.layer} zone {z.name!r} "
                    f"(version {located.versions[z.layer]}), which contains the point"
                    for z in why
                ],
            }
            for dept, why in departments_for(city, located.zones).items()
        ],
    }
