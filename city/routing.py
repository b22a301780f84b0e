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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shapely.geometry import shape
from shapely.validation import make_valid

from city.config import CityConfig
from city.geo import BEGINNING, AreaIndex, Jurisdictions, LayerVersion, Located, Zone, load_layer
from city.rules import RuleSet
from city.sharing import (
    Authorizer,
    CompiledSubscription,
    Decision,
    GrantSet,
    PolicySet,
    SubscriptionSpec,
    ZoneKey,
    compile_subscription,
    compile_subscriptions,
)


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
    """The outcome for one event: deliveries, every decision (for the audit), and where the
    event was found (zones, the jurisdiction versions used, boundary ties)."""

    deliveries: list[Delivery]
    decisions: list[tuple[str, str, Decision]]  # (dept, subscription id, decision)
    where: Located | None = None

    @property
    def versions(self) -> dict[str, int]:
        return dict(self.where.versions) if self.where is not None else {}

    @property
    def ties(self) -> dict[str, tuple[str, ...]]:
        return dict(self.where.ties) if self.where is not None else {}


def load_zones(config: CityConfig, base_dir: Path) -> list[Zone]:
    """All zones of all layers the config declares, in a stable order."""
    zones: list[Zone] = []
    for name, layer in config.layers.items():
        zones.extend(load_layer(name, base_dir / layer.path, layer.name_property))
    return zones


def _epoch(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


class Router:
    """Routes events for one city config.

    Per batch: one geo pass (H3 index; each event under the jurisdiction versions in force at
    its own time), then per event the subscriptions of its type whose scope admits its zones
    (memoised per distinct answer), then the sharing decision (`Authorizer.decide`).
    """

    def __init__(self, config: CityConfig, jurisdictions: Jurisdictions):
        self.config = config
        self.jurisdictions = jurisdictions
        self.policies = PolicySet.from_config(config.sharing)
        self.subscriptions = compile_subscriptions(config.departments)
        self.areas = config.geo.areas
        self._area_index = AreaIndex(self.areas, config.geo.resolution) if self.areas else None
        self._area_subs = {
            area.id: compile_subscription(
                _Owner(area.department),
                SubscriptionSpec(
                    id=area.id,
                    types=area.types,
                    scope="citywide",  # the area index has already decided "where"
                    filter=area.filter,
                    purpose=area.purpose,
                ),
            )
            for area in self.areas
        }
        self._check_scopes()
        self._default_authorizer = Authorizer(self.policies)
        self.rules = RuleSet(config.sharing.rules)

    @classmethod
    def from_config(cls, config: CityConfig, base_dir: Path) -> Router:
        return cls(config, Jurisdictions.from_city(config, base_dir, config.geo))

    @classmethod
    def from_zones(cls, config: CityConfig, zones: Sequence[Zone]) -> Router:
        """A router over zones built in code (version 0 of each of their layers)."""
        by_layer: dict[str, list[Zone]] = {}
        for zone in zones:
            by_layer.setdefault(zone.layer, []).append(zone)
        versions = [
            LayerVersion(layer=name, version=0, effective_from=BEGINNING, zones=tuple(members))
            for name, members in by_layer.items()
        ]
        return cls(config, Jurisdictions(versions, config.geo.resolution, config.geo.exclusive))

    def _check_scopes(self) -> None:
        named: set[ZoneKey] = set()
        for layer in self.jurisdictions.layers:
            for version in self.jurisdictions.history(layer):
                named.update((z.layer, z.name) for z in version.zones)
                named.add((layer, "*"))
        missing = sorted(
            f"{layer}:{name}"
            for sub in self.subscriptions.all
            for layer, name in (sub.zones or ())
            if (layer, name) not in named
        )
        if missing:
            raise ValueError("subscription scope names zones no layer has: " + ", ".join(missing))

    def authorizer(self, grants: GrantSet | None = None) -> Authorizer:
        """An authorizer for this config's policies and the given grants (None: no grants)."""
        return self._default_authorizer if grants is None else Authorizer(self.policies, grants)

    def locate(
        self, events: Sequence[dict[str, Any]], world: Jurisdictions | None = None
    ) -> list[tuple[Located | None, tuple[str, ...]]]:
        """For each event: where it is (zones, layer versions, ties) and the subscription areas
        it falls in. Points go through the index as one batch; lines and areas one by one."""
        world = world or self.jurisdictions
        result: list[tuple[Located | None, tuple[str, ...]]] = [(None, ())] * len(events)
        rows: list[int] = []
        lats: list[float] = []
        lons: list[float] = []
        times: list[float] = []
        cells: list[Any] = []
        now = time.time()
        for row, event in enumerate(events):
            loc = event.get("location")
            if not loc:
                continue
            if "lat" in loc:
                rows.append(row)
                lats.append(loc["lat"])
                lons.append(loc["lon"])
                times.append(_epoch(event.get("time")) or now)
                cells.append(event.get("h3cell"))
            else:
                geometry = shape(loc)
                if not geometry.is_valid:  # overlapping parts of a MultiPolygon
                    geometry = make_valid(geometry)
                at = _epoch(event.get("time"))
                when = datetime.fromtimestamp(at, UTC) if at is not None else None
                areas = self._area_index.intersecting(geometry) if self._area_index else ()
                result[row] = (world.intersecting(geometry, when), tuple(a.id for a in areas))
        if rows:
            have_cells = any(c is not None for c in cells)
            located = world.locate_batch(lats, lons, times, cells if have_cells else None)
            hits = (
                self._area_index.matching(lats, lons, cells if have_cells else None)
                if self._area_index
                else [()] * len(rows)
            )
            for row, where, areas in zip(rows, located, hits, strict=True):
                result[row] = (where, tuple(a.id for a in areas))
        return result

    def route_batch(
        self,
        events: Sequence[dict[str, Any]],
        authorizer: Authorizer | None = None,
        now: float | None = None,
        world: Jurisdictions | None = None,
    ) -> list[Routed]:
        """For each event (wire form), who receives it and every decision taken.

        Events of one batch that reach the same candidates with the same decisions (the same
        place, type and decision objects: the authorizer hands out one object per distinct
        answer) share one `Routed`, which callers treat as read-only: the per-event work is
        the geo lookup and the decisions, and the rest is built once per distinct outcome.
        """
        auth = authorizer or self._default_authorizer
        decide = auth.decide
        now = time.time() if now is None else now
        memo: dict[tuple[object, ...], list[tuple[CompiledSubscription, list[str]]]] = {}
        # Keyed by the ids of the decisions; the value keeps them alive, so no id is reused.
        shared: dict[tuple[object, ...], tuple[Routed, tuple[Decision, ...]]] = {}
        routed = []
        for event, (where, areas) in zip(events, self.locate(events, world), strict=True):
            etype = event["type"]
            key = (id(where), etype, areas)
            candidates = memo.get(key)
            if candidates is None:
                candidates = memo[key] = self._candidates(etype, where, areas)
            decisions = tuple([decide(event, sub, now) for sub, _ in candidates])
            outcome_key = (key, *map(id, decisions))
            found = shared.get(outcome_key)
            if found is None:
                found = shared[outcome_key] = (
                    self._decide(where, candidates, decisions),
                    decisions,
                )
            routed.append(found[0])
        return routed

    def route(
        self, event: dict[str, Any], authorizer: Authorizer | None = None, now: float | None = None
    ) -> list[Delivery]:
        return self.route_batch([event], authorizer, now)[0].deliveries

    def _in_scope(
        self, event_type: str, where: Located | None
    ) -> list[tuple[CompiledSubscription, list[str]]]:
        """Subscriptions of this type whose scope admits the place, with the zones that did."""
        keys = [(z.layer, z.name) for z in where.zones] if where is not None else []
        out: list[tuple[CompiledSubscription, list[str]]] = []
        for sub in self.subscriptions.for_type(event_type):
            if sub.zones is None:
                out.append((sub, []))
                continue
            hit = [
                f"{layer}:{name}"
                for layer, name in keys
                if (layer, name) in sub.zones or (layer, "*") in sub.zones
            ]
            if hit:
                out.append((sub, hit))
        return out

    def _candidates(
        self, event_type: str, where: Located | None, areas: tuple[str, ...]
    ) -> list[tuple[CompiledSubscription, list[str]]]:
        """The subscriptions in scope of the place, then those of the areas it falls in."""
        candidates = self._in_scope(event_type, where)
        return candidates + [
            (self._area_subs[a], [f"area:{a}"])
            for a in areas
            if self._area_subs[a].matches_type(event_type)
        ]

    def _decide(
        self,
        where: Located | None,
        candidates: list[tuple[CompiledSubscription, list[str]]],
        decisions: Sequence[Decision],
    ) -> Routed:
        """The outcome of one candidate list and its decisions (one per candidate)."""
        routed = Routed([], [], where)
        by_key: dict[tuple[str, str], Delivery] = {}
        for (sub, hit), decision in zip(candidates, decisions, strict=True):
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
            if not hit:
                delivery.citywide = True
            for label in hit:
                if label not in delivery.zones:
                    delivery.zones.append(label)
        return routed


@dataclass(frozen=True)
class _Owner:
    """The department an area subscription belongs to, shaped like a config department."""

    id: str
    jurisdiction: tuple[()] = ()
