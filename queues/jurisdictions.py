"""Jurisdiction layer versions in Redis: publish atomically, list, and let workers notice cheaply.

A publish stores the GeoJSON (zlib) and its metadata under a new version number and bumps one
generation counter, all in one Lua script, so a reader sees either the whole new version or none
of it. Workers call `JurisdictionWatcher.current()` once per batch: one GET of the counter; only
when it moved do they load the new versions and build their indexes, without a restart.

Effective times of a layer only move forward (a publish with an earlier ``effective_from`` than
the layer's latest is refused), so history is never rewritten under events already routed.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from redis import Redis
from redis.exceptions import ResponseError

from city.geo import Jurisdictions, LayerVersion
from queues.keys import Keys

# KEYS: seq hash, meta hash, layers set, generation
# ARGV: data key prefix, compressed GeoJSON, metadata JSON, layer, effective_from epoch
_PUBLISH = """
local last = tonumber(redis.call('HGET', KEYS[1], 'effective_from') or '-1e300')
if tonumber(ARGV[5]) < last then
  return redis.error_reply('EFFECTIVE_BEFORE_LATEST ' .. last)
end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'effective_from', ARGV[5])
redis.call('SET', ARGV[1] .. v, ARGV[2])
redis.call('HSET', KEYS[2], v, ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('INCR', KEYS[4])
return v
"""


class PublishError(ValueError):
    """A publish Redis refused (e.g. effective time earlier than the layer's latest version)."""


@dataclass(frozen=True)
class VersionInfo:
    """A published version without its geometry: what `list` and `history` show."""

    layer: str
    version: int
    effective_from: datetime
    published_at: datetime
    name_property: str | None
    checksum: str
    note: str
    features: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "version": self.version,
            "effective_from": self.effective_from.isoformat(),
            "published_at": self.published_at.isoformat(),
            "name_property": self.name_property,
            "checksum": self.checksum,
            "note": self.note,
            "features": self.features,
        }


class JurisdictionStore:
    """Layer versions under `Keys` in one Redis (a client with bytes replies: data is zlib)."""

    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._publish = redis.register_script(_PUBLISH)

    def publish(self, version: LayerVersion, geojson: bytes) -> int:
        """Store a validated version (its `version` field is ignored); returns the new number."""
        layer = version.layer
        meta = {
            "effective_from": version.effective_from.isoformat(),
            "published_at": (version.published_at or datetime.now(UTC)).isoformat(),
            "name_property": version.name_property,
            "checksum": version.checksum,
            "note": version.note,
            "features": len(version.zones),
        }
        try:
            number = self._publish(
                keys=[
                    self.keys.juris_seq(layer),
                    self.keys.juris_meta(layer),
                    self.keys.juris_layers,
                    self.keys.juris_generation,
                ],
                args=[
                    self.keys.juris_data_prefix(layer),
                    zlib.compress(geojson, 6),
                    json.dumps(meta),
                    layer,
                    repr(version.effective_from.timestamp()),
                ],
            )
        except ResponseError as exc:
            if "EFFECTIVE_BEFORE_LATEST" in str(exc):
                last = float(str(exc).split()[-1])
                raise PublishError(
                    f"{layer}: effective_from {version.effective_from.isoformat()} is before the "
                    f"latest version's ({datetime.fromtimestamp(last, UTC).isoformat()})"
                ) from None
            raise
        return int(number)

    def generation(self) -> int:
        """Changes on every publish; one GET."""
        return int(self.redis.get(self.keys.juris_generation) or 0)

    def layers(self) -> list[str]:
        return sorted(_text(m) for m in self.redis.smembers(self.keys.juris_layers))

    def history(self, layer: str) -> list[VersionInfo]:
        """Published versions of a layer, by version number."""
        raw = self.redis.hgetall(self.keys.juris_meta(layer))
        return sorted(
            (_info(layer, int(k), json.loads(v)) for k, v in raw.items()),
            key=lambda i: i.version,
        )

    def geojson(self, layer: str, version: int) -> bytes:
        data = self.redis.get(self.keys.juris_data(layer, version))
        if data is None:
            raise KeyError(f"layer {layer!r} has no published version {version}")
        return zlib.decompress(cast(bytes, data))

    def load(self, layer: str, version: int) -> LayerVersion:
        """One published version, parsed into zones."""
        info = next((i for i in self.history(layer) if i.version == version), None)
        if info is None:
            raise KeyError(f"layer {layer!r} has no published version {version}")
        return _version(info, self.geojson(layer, version))

    def load_all(self, known: set[tuple[str, int]] | None = None) -> list[LayerVersion]:
        """Every published version not in `known` ((layer, version) pairs), in one round trip
        for the metadata and one for the data."""
        known = known or set()
        layers = self.layers()
        pipe = self.redis.pipeline(transaction=False)
        for layer in layers:
            pipe.hgetall(self.keys.juris_meta(layer))
        wanted = [
            _info(layer, int(k), json.loads(v))
            for layer, raw in zip(layers, pipe.execute(), strict=True)
            for k, v in raw.items()
            if (layer, int(k)) not in known
        ]
        if not wanted:
            return []
        datas = self.redis.mget([self.keys.juris_data(i.layer, i.version) for i in wanted])
        out = []
        for info, data in zip(wanted, datas, strict=True):
            if data is None:
                raise KeyError(f"layer {info.layer!r} version {info.version}: data missing")
            out.append(_version(info, zlib.decompress(cast(bytes, data))))
        return out

    def delete_all(self) -> None:
        """Remove every published version (tests and teardown of a demo city)."""
        keys = [self.keys.juris_generation, self.keys.juris_layers]
        for layer in self.layers():
            keys += [self.keys.juris_seq(layer), self.keys.juris_meta(layer)]
            keys += [self.keys.juris_data(layer, i.version) for i in self.history(layer)]
        self.redis.delete(*keys)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _info(layer: str, version: int, meta: dict[str, Any]) -> VersionInfo:
    return VersionInfo(
        layer=layer,
        version=version,
        effective_from=datetime.fromisoformat(meta["effective_from"]),
        published_at=datetime.fromisoformat(meta["published_at"]),
        name_property=meta.get("name_property"),
        checksum=meta.get("checksum", ""),
        note=meta.get("note", ""),
        features=int(meta.get("features", 0)),
    )


def _version(info: VersionInfo, geojson: bytes) -> LayerVersion:
    return LayerVersion.from_geojson(
        info.layer,
        info.version,
        info.effective_from,
        geojson,
        info.name_property,
        published_at=info.published_at,
        note=info.note,
    )


class JurisdictionWatcher:
    """A worker's view of the jurisdictions: the config's layers plus every published version.

    Call `current()` after reading a batch and before routing it: one GET when nothing changed.
    The returned `Jurisdictions` is immutable; keep using it for the whole batch.
    """

    def __init__(self, store: JurisdictionStore, base: Jurisdictions):
        self.store = store
        self._current = base
        self._generation: int | None = None
        self._known: set[tuple[str, int]] = set()

    def current(self, generation: int | None = None) -> Jurisdictions:
        """`generation`: the counter when the caller already read it (saves a GET)."""
        generation = self.store.generation() if generation is None else generation
        if generation != self._generation:
            fresh = self.store.load_all(self._known)
            if fresh:
                self._current = self._current.with_versions(fresh)
                # build now, not inside the first batch that needs it
                self._current.prepare(v.effective_from for v in fresh)
                self._known.update((v.layer, v.version) for v in fresh)
            self._generation = generation
        return self._current
