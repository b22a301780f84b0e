"""``GET /v1/locate?lat=&lon=[&at=]``: the jurisdictions and departments of a point.

The same answer as ``cityrelay locate`` (workers/cli/geo.py): the zones containing the point
under the layer versions in force at ``at`` (default now; published redistrictings included),
whether it lies on a border, exclusive-layer ties, and each department with why. The config's
layers are indexed when the gateway starts (in a thread, `Locator.warm`); published versions
are picked up through `JurisdictionWatcher` (one GET per request when nothing changed).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis

from city.config import CityConfig
from city.geo import Jurisdictions, location_report
from queues.jurisdictions import JurisdictionStore, JurisdictionWatcher
from queues.keys import Keys
from workers.gateway.problem import Problem


def parse_point(params: Any) -> tuple[float, float, datetime]:
    try:
        lat, lon = float(params["lat"]), float(params["lon"])
    except KeyError:
        raise Problem(400, "bad_query", "give lat and lon") from None
    except ValueError:
        raise Problem(400, "bad_query", "lat and lon must be numbers") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):  # NaN fails both comparisons
        raise Problem(400, "bad_query", f"({lat}, {lon}) is not a lat/lon position")
    at = datetime.now(UTC)
    if "at" in params:
        try:
            at = datetime.fromisoformat(params["at"])
        except ValueError:
            raise Problem(400, "bad_query", "at: an ISO 8601 time with a zone") from None
        if at.tzinfo is None:
            raise Problem(400, "bad_query", "at: add a time zone (Z or +hh:mm)")
        at = at.astimezone(UTC)
    return lat, lon, at


class Locator:
    """Thread-safe; `locate` runs in a worker thread."""

    def __init__(self, redis: Redis, keys: Keys, config: CityConfig, base_dir: Path):
        self.config = config
        self.base_dir = base_dir
        self.store = JurisdictionStore(redis, keys)
        self._watcher: JurisdictionWatcher | None = None
        self._lock = threading.Lock()

    def _world(self) -> Jurisdictions:
        with self._lock:
            if self._watcher is None:
                base = Jurisdictions.from_city(self.config, self.base_dir, self.config.geo)
                self._watcher = JurisdictionWatcher(self.store, base)
            return self._watcher.current()

    def warm(self) -> None:
        self._world()

    def locate(self, lat: float, lon: float, at: datetime) -> dict[str, Any]:
        return location_report(self._world(), self.config, lat, lon, at)
