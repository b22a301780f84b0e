"""Subscriptions: what a department asks for, compiled once and indexed by event type.

A subscription names event type patterns, an optional attribute filter, a spatial scope and a
declared purpose; `compile_subscriptions` turns a city's into a `SubscriptionIndex` the router
asks for the candidates of each event type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from city.filters import Predicate, _check_filter, compile_filter
from city.patterns import _check_patterns, type_matcher
from city.sharing.strict import _Strict


class AreaRef(_Strict):
    """Zones of one jurisdiction layer (an explicit subscription area)."""

    layer: str
    zones: list[str] | Literal["all"] = "all"


class SubscriptionSpec(_Strict):
    """A subscription with everything this module understands.

    `scope`: ``jurisdiction`` (the department's own zones), ``area`` (the zones in `area`) or
    ``citywide``. `filter`: see `compile_filter`. `purpose`: declared, and checked against
    the policies and grants. The city config's subscription model may be this one.
    """

    id: str
    types: list[str] = Field(min_length=1)
    scope: Literal["jurisdiction", "area", "citywide"] = "jurisdiction"
    area: list[AreaRef] | None = None
    filter: dict[str, Any] | None = None
    purpose: str = "operations"

    @field_validator("types")
    @classmethod
    def _types_ok(cls, v: list[str]) -> list[str]:
        return _check_patterns(v)

    @field_validator("filter")
    @classmethod
    def _filter_compiles(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_filter(v)

    @model_validator(mode="after")
    def _area_with_scope(self) -> SubscriptionSpec:
        if (self.scope == "area") != bool(self.area):
            raise ValueError("scope 'area' needs a non-empty `area:` (and only it takes one)")
        return self


ZoneKey = tuple[str, str]  # (layer, zone name); zone "*" = the whole layer


@dataclass(frozen=True, slots=True, eq=False)
class CompiledSubscription:
    """A subscription ready for the hot path."""

    dept: str
    id: str
    purpose: str
    types: tuple[str, ...]
    matches_type: Callable[[str], bool]
    predicate: Predicate | None
    scope: str
    zones: frozenset[ZoneKey] | None  # None: citywide

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Type pattern and attribute filter (not the spatial scope)."""
        return self.matches_type(event["type"]) and (
            self.predicate is None or self.predicate(event)
        )

    def in_scope(self, event_zones: Iterable[ZoneKey]) -> bool:
        """Whether an event located in `event_zones` (layer, zone name) is inside the scope."""
        if self.zones is None:
            return True
        zones = self.zones
        return any(z in zones or (z[0], "*") in zones for z in event_zones)


def _zones(refs: Iterable[Any]) -> frozenset[ZoneKey]:
    out: set[ZoneKey] = set()
    for ref in refs:
        if ref.zones == "all":
            out.add((ref.layer, "*"))
        else:
            out.update((ref.layer, z) for z in ref.zones)
    return frozenset(out)


def compile_subscription(dept: Any, sub: Any) -> CompiledSubscription:
    """Compile one subscription of `dept` (objects shaped like the city config's)."""
    spec = (
        sub
        if isinstance(sub, SubscriptionSpec)
        else SubscriptionSpec.model_validate(
            sub.model_dump() if hasattr(sub, "model_dump") else sub
        )
    )
    if spec.scope == "citywide":
        zones = None
    elif spec.scope == "area":
        zones = _zones(spec.area or ())
    else:
        zones = _zones(getattr(dept, "jurisdiction", ()) or ())
    return CompiledSubscription(
        dept=dept.id,
        id=spec.id,
        purpose=spec.purpose,
        types=tuple(spec.types),
        matches_type=type_matcher(spec.types),
        predicate=compile_filter(spec.filter) if spec.filter else None,
        scope=spec.scope,
        zones=zones,
    )


class SubscriptionIndex:
    """All subscriptions of a city, indexed by event type (computed once per type)."""

    def __init__(self, subscriptions: Iterable[CompiledSubscription]):
        self.all = tuple(subscriptions)
        self._by_id = {(s.dept, s.id): s for s in self.all}
        self._by_type: dict[str, tuple[CompiledSubscription, ...]] = {}

    def for_type(self, event_type: str) -> tuple[CompiledSubscription, ...]:
        found = self._by_type.get(event_type)
        if found is None:
            found = tuple(s for s in self.all if s.matches_type(event_type))
            self._by_type[event_type] = found
        return found

    def get(self, dept: str, sub_id: str) -> CompiledSubscription:
        found = self._by_id.get((dept, sub_id))
        if found is None:
            raise KeyError(f"no subscription {sub_id!r} of department {dept!r}")
        return found


def compile_subscriptions(departments: Iterable[Any]) -> SubscriptionIndex:
    """Every department's subscriptions (``CityConfig.departments``), compiled."""
    return SubscriptionIndex(
        compile_subscription(dept, sub) for dept in departments for sub in dept.subscriptions
    )
