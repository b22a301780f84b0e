"""Versioned jurisdiction layers: which zones, under which boundaries, at an event's own time.

Redistricting publishes a new version of one layer with an ``effective_from`` time. Every event
is routed with the versions in force at the event's time, so late and replayed events follow the
boundaries of their time, and every answer names the versions it used. The layers of the city
config are version 0 of each layer, in force since the beginning of time.

Indexes are built once per (layer, version) and shared; a batch computes each point's H3 cell once
and hands it to every layer's index. Exclusive layers (police precincts) get one owner per point
through a configured tie-break, and the answer records that it was a boundary case.

Pure: no Redis here (the store is `queues.jurisdictions`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import shapely
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from city.geo import (
    JurisdictionIndex,
    LayerError,
    Zone,
    area_m2,
    cells_for,
    cells_to_resolution,
    circle,
    load_layer,
    parse_cells,
    parse_layer,
)

if TYPE_CHECKING:  # config.py may import GeoConfig from here: no import cycle at run time
    from city.config import CityConfig

#: When version 0 (the config's own files) took effect.
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


# --- config section ``geo`` -----------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TieBreak(_Strict):
    """How an exclusive layer picks one owner for a point on a shared border.

    ``lowest_index``: the first feature in the file; ``name``: the smallest zone name;
    ``priority``: the first of `priority` (zone names) among the candidates, else lowest index.
    """

    rule: Literal["lowest_index", "name", "priority"] = "lowest_index"
    priority: list[str] = Field(default_factory=list)


class AreaSubscription(_Strict):
    """A department's interest in an area it draws itself, not in a jurisdiction layer.

    Either `geometry` (a GeoJSON Polygon/MultiPolygon, lon/lat) or `points` plus `radius_m`
    (e.g. traffic incidents within 200 m of a water utility's pumping stations).
    """

    id: str
    department: str
    types: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    purpose: str = "operations"
    filter: dict[str, Any] | None = None
    geometry: dict[str, Any] | None = None
    points: list[tuple[float, float]] | None = Field(default=None, description="[lat, lon] pairs")
    radius_m: float | None = Field(default=None, gt=0, le=100_000)

    @model_validator(mode="after")
    def _one_shape(self) -> AreaSubscription:
        if (self.geometry is None) == (self.points is None):
            raise ValueError("give either 'geometry' or 'points' with 'radius_m'")
        if self.points is not None and self.radius_m is None:
            raise ValueError("'points' needs 'radius_m' (metres)")
        if self.geometry is not None:
            try:
                geom = shape(self.geometry)
            except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
                raise ValueError(f"geometry: {exc}") from None
            if geom.geom_type not in ("Polygon", "MultiPolygon") or not geom.is_valid:
                raise ValueError("geometry must be a valid Polygon or MultiPolygon")
        for lat, lon in self.points or []:
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"point ({lat}, {lon}) is not [lat, lon]")
        return self

    def shape(self) -> BaseGeometry:
        """The area as one lon/lat geometry (circles as 128-gons)."""
        if self.geometry is not None:
            return shape(self.geometry)
        assert self.points is not None and self.radius_m is not None
        return shapely.union_all([circle(lat, lon, self.radius_m) for lat, lon in self.points])


class GeoConfig(_Strict):
    """The ``geo`` section of the city YAML."""

    resolution: int = Field(default=10, ge=5, le=13, description="H3 resolution of the index")
    exclusive: dict[str, TieBreak] = Field(
        default_factory=dict, description="layers that must have exactly one owner per point"
    )
    areas: list[AreaSubscription] = Field(default_factory=list)


def parse_geo(data: Any, city: CityConfig | None = None, source: str = "<config>") -> GeoConfig:
    """Validate the ``geo`` section; with `city`, also check layer and department references."""
    from city.errors import ConfigError

    try:
        geo = GeoConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = [
            ("geo." + ".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()
        ]
        raise ConfigError(source, problems) from None
    problems = []
    if city is not None:
        for layer in geo.exclusive:
            if layer not in city.layers:
                problems.append((f"geo.exclusive.{layer}", "no such layer in 'layers'"))
        ids = set(city.department_ids)
        for i, area in enumerate(geo.areas):
            if area.department not in ids:
                problems.append((f"geo.areas[{i}].department", f"unknown {area.department!r}"))
    if problems:
        raise ConfigError(source, problems)
    return geo


# --- versions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerVersion:
    """One version of one layer: its zones and from when they are in force."""

    layer: str
    version: int
    effective_from: datetime
    zones: tuple[Zone, ...]
    name_property: str | None = None
    checksum: str = ""
    published_at: datetime | None = None
    note: str = ""

    @classmethod
    def from_geojson(
        cls,
        layer: str,
        version: int,
        effective_from: datetime,
        text: str | bytes,
        name_property: str | None = None,
        **meta: Any,
    ) -> LayerVersion:
        raw = text.encode() if isinstance(text, str) else text
        zones = parse_layer(layer, raw, name_property, source=f"{layer} v{version}")
        if not zones:
            raise LayerError(f"{layer} v{version}: has no features")
        return cls(
            layer=layer,
            version=version,
            effective_from=_aware(effective_from),
            zones=tuple(zones),
            name_property=name_property,
            checksum=hashlib.sha256(raw).hexdigest(),
            **meta,
        )


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"time {value.isoformat()} must carry a timezone")
    return value.astimezone(UTC)


def _epoch(times: Sequence[Any] | np.ndarray | None, n: int) -> np.ndarray:
    """Times as float epoch seconds: datetimes (aware), numbers, or None for "now"."""
    if times is None:
        return np.full(n, datetime.now(UTC).timestamp())
    if isinstance(times, np.ndarray) and times.dtype.kind in "fiu":
        out = times.astype(np.float64)
    else:
        out = np.array(
            [_aware(t).timestamp() if isinstance(t, datetime) else float(t) for t in times],
            dtype=np.float64,
        )
    if out.shape != (n,):
        raise ValueError(f"times must match the points: {out.shape} vs ({n},)")
    return out


_NO_TIES: Mapping[str, tuple[str, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Located:
    """Where one point (or geometry) falls: zones after tie-breaks, and the versions used.

    `ties` maps an exclusive layer to the names of the zones that all contained the point when a
    tie-break chose one (a boundary case, recorded with the delivery).
    """

    zones: tuple[Zone, ...]
    versions: Mapping[str, int]
    ties: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _NO_TIES)

    def refs(self) -> tuple[str, ...]:
        return tuple(z.ref for z in self.zones)


def break_tie(zones: Sequence[Zone], rule: TieBreak) -> Zone:
    """The one owner among several zones of an exclusive layer."""
    if rule.rule == "name":
        return min(zones, key=lambda z: (z.name, z.index))
    if rule.rule == "priority":
        for name in rule.priority:
            for zone in zones:
                if zone.name == name:
                    return zone
    return min(zones, key=lambda z: z.index)


class Jurisdictions:
    """All versions of all layers; routes points and geometries by their own time.

    Immutable once built: a worker swaps in a new instance when a version is published, and a
    batch in flight finishes on the instance it started with.
    """

    def __init__(
        self,
        versions: Iterable[LayerVersion],
        resolution: int = 10,
        exclusive: Mapping[str, TieBreak] | None = None,
        _cache: dict[tuple[str, int], JurisdictionIndex] | None = None,
        _combos: dict[tuple[tuple[str, int], ...], JurisdictionIndex] | None = None,
    ):
        self.resolution = resolution
        self.exclusive = dict(exclusive or {})
        by_layer: dict[str, dict[int, LayerVersion]] = {}
        for v in versions:
            by_layer.setdefault(v.layer, {})[v.version] = v
        self._layers: dict[str, list[LayerVersion]] = {
            # in force order: effective time, then the later publication wins a tie
            layer: sorted(vs.values(), key=lambda v: (v.effective_from, v.version))
            for layer, vs in sorted(by_layer.items())
        }
        self._starts = {
            layer: np.array([v.effective_from.timestamp() for v in vs])
            for layer, vs in self._layers.items()
        }
        self._cache = _cache if _cache is not None else {}
        self._combos = _combos if _combos is not None else {}

    @classmethod
    def from_city(
        cls, config: CityConfig, base_dir: str | Path, geo: GeoConfig | None = None
    ) -> Jurisdictions:
        """Version 0 of every layer, from the files the city config names."""
        geo = geo or GeoConfig()
        versions = []
        for name, layer in config.layers.items():
            path = Path(base_dir) / layer.path
            zones = load_layer(name, path, layer.name_property)
            versions.append(
                LayerVersion(
                    layer=name,
                    version=0,
                    effective_from=BEGINNING,
                    zones=tuple(zones),
                    name_property=layer.name_property,
                    checksum=hashlib.sha256(path.read_bytes()).hexdigest(),
                    note=f"city config {layer.path}",
                )
            )
        return cls(versions, geo.resolution, geo.exclusive)

    def with_versions(self, versions: Iterable[LayerVersion]) -> Jurisdictions:
        """A new instance with more versions; indexes already built are shared, not rebuilt."""
        current = [v for vs in self._layers.values() for v in vs]
        return Jurisdictions(
            [*current, *versions], self.resolution, self.exclusive, self._cache, self._combos
        )

    @property
    def layers(self) -> list[str]:
        return list(self._layers)

    def history(self, layer: str) -> list[LayerVersion]:
        """Versions of a layer in the order they take effect."""
        if layer not in self._layers:
            raise KeyError(f"unknown layer {layer!r}")
        return list(self._layers[layer])

    def version(self, layer: str, version: int) -> LayerVersion:
        for v in self.history(layer):
            if v.version == version:
                return v
        raise KeyError(f"layer {layer!r} has no version {version}")

    def versions_at(self, at: datetime) -> dict[str, LayerVersion]:
        """The version of every layer in force at `at` (layers not yet in force are absent)."""
        t = _aware(at).timestamp()
        out = {}
        for layer, starts in self._starts.items():
            k = int(np.searchsorted(starts, t, side="right")) - 1
            if k >= 0:
                out[layer] = self._layers[layer][k]
        return out

    def index(self, version: LayerVersion) -> JurisdictionIndex:
        """The (cached) index of one layer version."""
        key = (version.layer, version.version)
        idx = self._cache.get(key)
        if idx is None:
            idx = self._cache[key] = JurisdictionIndex(version.zones, self.resolution)
        return idx

    def prepare(self, at: Iterable[datetime] = ()) -> None:
        """Build every version's index now, and the merged index for now and each time in `at`,
        so routing never waits for one."""
        for vs in self._layers.values():
            for v in vs:
                self.index(v)
        for t in [datetime.now(UTC), *at]:
            in_force = list(self.versions_at(t).values())
            if in_force:
                self.combined(in_force)

    # -- routing ---------------------------------------------------------------------------

    def locate_batch(
        self,
        lats: Sequence[float] | np.ndarray,
        lons: Sequence[float] | np.ndarray,
        times: Sequence[Any] | np.ndarray | None = None,
        cells: Sequence[Any] | np.ndarray | None = None,
    ) -> list[Located]:
        """Route a micro-batch: for each point, its zones under the versions of its own time.

        `times`: aware datetimes or epoch seconds per point (None: now). `cells`: optional H3
        cells per point (see `JurisdictionIndex.locate_many`). Computes each cell once.
        """
        lat = np.ascontiguousarray(lats, dtype=np.float64)
        lon = np.ascontiguousarray(lons, dtype=np.float64)
        n = len(lat)
        t = _epoch(times, n)
        if cells is None:
            cell = cells_for(lat, lon, self.resolution)
        else:
            cell = cells_to_resolution(parse_cells(cells), self.resolution)
            missing = np.flatnonzero(cell == 0)
            cell[missing] = cells_for(lat[missing], lon[missing], self.resolution)
        # One row per point: which version (position in the layer's list) is in force.
        layers = list(self._layers)
        if not layers or not n:
            return [Located((), {}) for _ in range(n)]
        choice = np.stack(
            [np.searchsorted(self._starts[la], t, side="right") - 1 for la in layers], axis=1
        )
        if (choice == choice[0]).all():  # the usual case: one set of versions for the batch
            combos, group = choice[:1], np.zeros(n, dtype=np.int64)
        else:
            combos, group = np.unique(choice, axis=0, return_inverse=True)
            group = np.asarray(group).reshape(-1)
        out: list[Located | None] = [None] * n
        for g, combo in enumerate(combos.tolist()):
            members = np.flatnonzero(group == g)
            in_force = [self._layers[la][k] for la, k in zip(layers, combo, strict=True) if k >= 0]
            located = self._locate_group(in_force, lat[members], lon[members], cell[members])
            for i, loc in zip(members.tolist(), located, strict=True):
                out[i] = loc
        return out  # type: ignore[return-value]

    def combined(self, in_force: Sequence[LayerVersion]) -> JurisdictionIndex:
        """One index over a set of layer versions (cached; merged from the per-layer covers)."""
        key = tuple((v.layer, v.version) for v in in_force)
        idx = self._combos.get(key)
        if idx is None:
            idx = JurisdictionIndex.combine([self.index(v) for v in in_force])
            if len(self._combos) >= 8:  # versions in force change rarely; keep a few
                self._combos.pop(next(iter(self._combos)))
            self._combos[key] = idx
        return idx

    def _locate_group(
        self, in_force: list[LayerVersion], lat: np.ndarray, lon: np.ndarray, cell: np.ndarray
    ) -> list[Located]:
        versions = MappingProxyType({v.layer: v.version for v in in_force})
        if not in_force:
            return [Located((), versions) for _ in range(len(lat))]
        index = self.combined(in_force)
        zones = index.zones
        # Few distinct answers per batch: resolve each (zones after tie-breaks) once.
        memo: dict[tuple[int, ...], Located] = {}
        out = []
        for answer in index.locate_many(lat, lon, cells=cell):
            located = memo.get(answer)
            if located is None:
                located = memo[answer] = self._resolve([zones[p] for p in answer], versions)
            out.append(located)
        return out

    def _resolve(self, hits: list[Zone], versions: Mapping[str, int]) -> Located:
        """Apply exclusive layers' tie-breaks to one answer (zones arrive grouped by layer)."""
        if not self.exclusive:
            return Located(tuple(hits), versions)
        found: list[Zone] = []
        ties: dict[str, tuple[str, ...]] = {}
        for layer, group in itertools.groupby(hits, key=lambda z: z.layer):
            members = list(group)
            rule = self.exclusive.get(layer)
            if rule is not None and len(members) > 1:
                ties[layer] = tuple(z.name for z in members)
                members = [break_tie(members, rule)]
            found.extend(members)
        return Located(tuple(found), versions, MappingProxyType(ties) if ties else _NO_TIES)

    def locate(self, lat: float, lon: float, at: datetime | None = None) -> Located:
        """One point at one time (default now)."""
        return self.locate_batch([lat], [lon], None if at is None else [at])[0]

    def intersecting(self, geometry: BaseGeometry, at: datetime | None = None) -> Located:
        """Every zone a line or area touches, under the versions in force at `at`.

        Exclusive layers keep all touched zones here: a road closure crossing two precincts
        concerns both.
        """
        in_force = self.versions_at(at or datetime.now(UTC))
        zones: list[Zone] = []
        for v in in_force.values():
            zones.extend(v.zones[p] for p in self.index(v).intersecting(geometry))
        return Located(
            tuple(zones), MappingProxyType({la: v.version for la, v in in_force.items()})
        )


# --- departments ----------------------------------------------------------------------------


def departments_for(config: CityConfig, zones: Iterable[Zone]) -> dict[str, list[Zone]]:
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


# --- redistricting checks -------------------------------------------------------------------


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


def validate_version(
    new: LayerVersion, config: CityConfig | None = None, exclusive: bool = False
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


# --- location-based subscriptions -----------------------------------------------------------


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
