"""The router: which departments receive an event, and why.

An event reaches a department when (1) one of the department's subscriptions names its type and
(2) the subscription's scope admits the event's place: ``citywide`` admits everything; the
default ``jurisdiction`` scope admits events whose location lies in (or, for lines and areas,
touches) one of the department's zones. Every `Delivery` names the subscriptions and zones that
led to it, so any delivery can be explained later.

Subscriptions are indexed by event type once per config; per event the work is one geo lookup
(batched) and a few dict lookups.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shapely.geometry import shape

from city.config import CityConfig, DepartmentConfig
from city.geo import JurisdictionIndex, Zone, load_layer


@dataclass(frozen=True)
class SubscriptionRef:
    dept: str
    id: str
    scope: str
    purpose: str


@dataclass
class Delivery:
    """One department receiving one event, with the reasons."""

    dept: str
    subscriptions: list[str] = field(default_factory=list)
    purposes: list[str] = field(default_factory=list)
    zones: list[str] = field(default_factory=list)
    citywide: bool = False

    def explain(self) -> dict[str, Any]:
        return {
            "subscriptions": self.subscriptions,
            "purposes": self.purposes,
            "zones": self.zones,
            "scope": "citywide" if self.citywide and not self.zones else "jurisdiction",
        }


def load_zones(config: CityConfig, base_dir: Path) -> list[Zone]:
    """All zones of all layers the config declares, in a stable order."""
    zones: list[Zone] = []
    for name, layer in config.layers.items():
        zones.extend(load_layer(name, base_dir / layer.path, layer.name_property))
    return zones


class Router:
    """Routes events for one city config (one version of it)."""

    def __init__(self, config: CityConfig, index: JurisdictionIndex):
        self.config = config
        self.index = index
        self._zone_depts = self._map_zones_to_departments(config.departments, index.zones)
        self._subs_by_type: dict[str, list[SubscriptionRef]] = {}
        self._patterns: list[tuple[str, SubscriptionRef]] = []
        for dept in config.departments:
            for sub in dept.subscriptions:
                ref = SubscriptionRef(dept.id, sub.id, sub.scope, sub.purpose)
                for pattern in sub.types:
                    self._patterns.append((pattern, ref))

    @classmethod
    def from_config(cls, config: CityConfig, base_dir: Path, resolution: int = 10) -> Router:
        return cls(config, JurisdictionIndex(load_zones(config, base_dir), resolution))

    @staticmethod
    def _map_zones_to_departments(
        departments: Sequence[DepartmentConfig], zones: Sequence[Zone]
    ) -> list[list[str]]:
        by_layer: dict[str, list[int]] = defaultdict(list)
        for position, zone in enumerate(zones):
            by_layer[zone.layer].append(position)
        zone_depts: list[list[str]] = [[] for _ in zones]
        for dept in departments:
            owned: set[int] = set()
            for ref in dept.jurisdiction:
                positions = by_layer.get(ref.layer, [])
                if ref.zones == "all":
                    owned.update(positions)
                    continue
                wanted = set(ref.zones)
                matched = {p for p in positions if zones[p].name in wanted}
                missing = wanted - {zones[p].name for p in matched}
                if missing:
                    raise ValueError(
                        f"department {dept.id!r}: layer {ref.layer!r} has no zone named "
                        + ", ".join(sorted(missing))
                    )
                owned.update(matched)
            for position in owned:
                zone_depts[position].append(dept.id)
        return zone_depts

    def subscribers(self, event_type: str) -> list[SubscriptionRef]:
        """Subscriptions naming this type (exact, prefix ``a.*`` or ``*``), memoised per type."""
        subs = self._subs_by_type.get(event_type)
        if subs is None:
            subs = [ref for pattern, ref in self._patterns if _matches(pattern, event_type)]
            self._subs_by_type[event_type] = subs
        return subs

    def zones_of(self, events: Sequence[dict[str, Any]]) -> list[tuple[int, ...]]:
        """Zone positions for each event: points batched through the index, shapes one by one."""
        result: list[tuple[int, ...]] = [()] * len(events)
        point_rows: list[int] = []
        lats: list[float] = []
        lons: list[float] = []
        for row, event in enumerate(events):
            loc = event.get("location")
            if not loc:
                continue
            if "lat" in loc:
                point_rows.append(row)
                lats.append(loc["lat"])
                lons.append(loc["lon"])
            else:
                result[row] = self.index.intersecting(shape(loc))
        if point_rows:
            for row, zones in zip(point_rows, self.index.locate_many(lats, lons), strict=True):
                result[row] = zones
        return result

    def route_batch(self, events: Sequence[dict[str, Any]]) -> list[list[Delivery]]:
        """For each event (wire form), the departments that receive it."""
        zone_sets = self.zones_of(events)
        return [self._decide(event, zones) for event, zones in zip(events, zone_sets, strict=True)]

    def route(self, event: dict[str, Any]) -> list[Delivery]:
        return self.route_batch([event])[0]

    def _decide(self, event: dict[str, Any], zones: tuple[int, ...]) -> list[Delivery]:
        subs = self.subscribers(event["type"])
        if not subs:
            return []
        in_jurisdiction: dict[str, list[str]] = {}
        for position in zones:
            for dept in self._zone_depts[position]:
                in_jurisdiction.setdefault(dept, []).append(self._zone_label(position))
        deliveries: dict[str, Delivery] = {}
        for sub in subs:
            if sub.scope == "citywide":
                delivery = deliveries.setdefault(sub.dept, Delivery(sub.dept))
                delivery.citywide = True
            elif sub.dept in in_jurisdiction:
                delivery = deliveries.setdefault(sub.dept, Delivery(sub.dept))
                delivery.zones = in_jurisdiction[sub.dept]
            else:
                continue
            delivery.subscriptions.append(sub.id)
            if sub.purpose not in delivery.purposes:
                delivery.purposes.append(sub.purpose)
        return list(deliveries.values())

    def _zone_label(self, position: int) -> str:
        zone = self.index.zones[position]
        return f"{zone.layer}:{zone.name}"


def _matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type
