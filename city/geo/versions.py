"""Layer versions: one layer's zones and the time from which they are in force.

Redistricting publishes a new version of one layer with an ``effective_from`` time. The layers of
the city config are version 0 of each layer, in force since the beginning of time (`BEGINNING`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from city.geo.layers import LayerError, Zone, parse_layer

#: When version 0 (the config's own files) took effect.
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


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
