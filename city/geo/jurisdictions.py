"""All versions of all layers: which zones, under which boundaries, at an event's own time.

Every event is routed with the versions in force at the event's time, so late and replayed
events follow the boundaries of their time, and every answer names the versions it used.

Indexes are built once per (layer, version) and shared; a batch computes each point's H3 cell once
and hands it to every layer's index. Exclusive layers (police precincts) get one owner per point
through a configured tie-break (`city.geo.tiebreak`), and the answer records that it was a
boundary case.

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
from typing import Any

import numpy as np
from shapely.geometry.base import BaseGeometry

from city.geo.cells import cells_for, cells_to_resolution, parse_cells
from city.geo.citylike import CityLike
from city.geo.config import GeoConfig, TieBreak
from city.geo.index import JurisdictionIndex
from city.geo.layers import Zone, load_layer
from city.geo.tiebreak import break_tie
from city.geo.versions import BEGINNING, LayerVersion, _aware


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
        cls, config: CityLike, base_dir: str | Path, geo: GeoConfig | None = None
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
