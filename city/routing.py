"""The router: which departments receive an event, and why.

An event reaches a department when (1) one of its subscriptions names the type and its filter
matches, (2) the subscription's scope admits the event's place - ``citywide`` everything,
``jurisdiction`` the department's own zones, ``area`` the zones it lists; a point inside or on
the border of a zone, a line or area touching it - and (3) the sharing policies or a grant let
the producing department's data go to that department for the subscription's purpose.

A department receives one delivery per purpose; it names the subscriptions, zones, policy or
grant that led to it, so any delivery can be explained later. Everything is compiled once per
config; per event the work is one geo lookup (batched) and dict lookups.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shapely.geometry import shape
from shapely.validation import make_valid

from city.config import CityConfig
from city.geo import JurisdictionIndex, Zone, load_layer
from city.policy import Authorizer, Decision, GrantSet, PolicySet, ZoneKey, compile_subscriptions
from city.rules import RuleSet


@dataclass
class Delivery:
    """One department receiving one event for one purpose, with the reasons.

    `decision` is the sharing decision (policy or grant, allowed fields); `subscriptions` and
    `zones` say why the department was a candidate at all.
    """

    dept: str
    purpose: str
    decision: Decision
    subscriptions: list[str] = field(default_factory=list)
    zones: list[str] = field(default_factory=list)
    citywide: bool = False

    def explain(self) -> dict[str, Any]:
        d = self.decision
        return {
            "subscriptions": self.subscriptions,
            "purpose": self.purpose,
            "zones": self.zones,
            "scope": "citywide" if self.citywide and not self.zones else "jurisdiction",
            "reason": d.reason,
            "policy": d.policy,
            "grant": d.grant,
        }


@dataclass
class Routed:
    """The outcome for one event: deliveries, plus every decision (for the audit)."""

    deliveries: list[Delivery]
    decisions: list[tuple[str, str, Decision]]  # (dept, subscription id, decision)


def load_zones(config: CityConfig, base_dir: Path) -> list[Zone]:
    """All zones of all layers the config declares, in a stable order."""
    zones: list[Zone] = []
    for name, layer in config.layers.items():
        zones.extend(load_layer(name, base_dir / layer.path, layer.name_property))
    return zones


class Router:
    """Routes events for one city config (one version of it).

    Per event: one geo lookup (batched), the subscriptions indexed by type, a spatial-scope
    check on precomputed zone positions, and the sharing decision (`Authorizer.decide`).
    """

    def __init__(self, config: CityConfig, index: JurisdictionIndex):
        self.config = config
        self.index = index
        self.policies = PolicySet.from_config(config.sharing)
        self.subscriptions = compile_subscriptions(config.departments)
        self._scope_positions = {
            (sub.dept, sub.id): self._positions(sub.zones, index.zones)
            for sub in self.subscriptions.all
        }
        self._default_authorizer = Authorizer(self.policies)
        self.rules = RuleSet(config.sharing.rules)

    @classmethod
    def from_config(cls, config: CityConfig, base_dir: Path, resolution: int = 10) -> Router:
        return cls(config, JurisdictionIndex(load_zones(config, base_dir), resolution))

    @staticmethod
    def _positions(
        wanted: frozenset[ZoneKey] | None, zones: Sequence[Zone]
    ) -> frozenset[int] | None:
        """Zone positions a subscription's scope covers (None: citywide)."""
        if wanted is None:
            return None
        positions = {
            p
            for p, z in enumerate(zones)
            if (z.layer, z.name) in wanted or (z.layer, "*") in wanted
        }
        named = {(z.layer, z.name) for z in zones} | {(z.layer, "*") for z in zones}
        missing = sorted(f"{layer}:{name}" for layer, name in wanted - named)
        if missing:
            raise ValueError("subscription scope names zones no layer has: " + ", ".join(missing))
        return frozenset(positions)

    def authorizer(self, grants: GrantSet | None = None) -> Authorizer:
        """An authorizer for this config's policies and the given grants (None: no grants)."""
        return self._default_authorizer if grants is None else Authorizer(self.policies, grants)

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
                geometry = shape(loc)
                if not geometry.is_valid:  # overlapping parts of a MultiPolygon
                    geometry = make_valid(geometry)
                result[row] = self.index.intersecting(geometry)
        if point_rows:
            for row, zones in zip(point_rows, self.index.locate_many(lats, lons), strict=True):
                result[row] = zones
        return result

    def route_batch(
        self,
        events: Sequence[dict[str, Any]],
        authorizer: Authorizer | None = None,
        now: float | None = None,
    ) -> list[Routed]:
        """For each event (wire form), who receives it and every decision taken."""
        auth = authorizer or self._default_authorizer
        now = time.time() if now is None else now
        zone_sets = self.zones_of(events)
        return [
            self._decide(event, zones, auth, now)
            for event, zones in zip(events, zone_sets, strict=True)
        ]

    def route(
        self, event: dict[str, Any], authorizer: Authorizer | None = None, now: float | None = None
    ) -> list[Delivery]:
        return self.route_batch([event], authorizer, now)[0].deliveries

    def _decide(
        self, event: dict[str, Any], zones: tuple[int, ...], auth: Authorizer, now: float
    ) -> Routed:
        routed = Routed([], [])
        candidates = self.subscriptions.for_type(event["type"])
        if not candidates:
            return routed
        by_key: dict[tuple[str, str], Delivery] = {}
        for sub in candidates:
            positions = self._scope_positions[(sub.dept, sub.id)]
            if positions is None:
                hit: list[int] = []
            else:
                hit = [p for p in zones if p in positions]
                if not hit:
                    continue
            decision = auth.decide(event, sub, now)
            routed.decisions.append((sub.dept, sub.id, decision))
            if not decision.allow:
                continue
            delivery = by_key.get((sub.dept, sub.purpose))
            if delivery is None:
                delivery = by_key[(sub.dept, sub.purpose)] = Delivery(
                    sub.dept, sub.purpose, decision
                )
                routed.deliveries.append(delivery)
            delivery.subscriptions.append(sub.id)
            if positions is None:
                delivery.citywide = True
            for p in hit:
                label = self._zone_label(p)
                if label not in delivery.zones:
                    delivery.zones.append(label)
        return routed

    def _zone_label(self, position: int) -> str:
        zone = self.index.zones[position]
        return f"{zone.layer}:{zone.name}"
