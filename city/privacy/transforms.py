"""The transforms a view applies: keep, drop, redact, mask, pseudonym, coarser place and time.

`parse_transform` reads a transform spec from the config; the helpers here redact and mask a
value, generalise a location to a coarser H3 cell and floor a time to a bucket (both memoised:
few cells and buckets, many events). Keyed pseudonyms themselves are made in `keys`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import h3

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``15m`` -> 900 seconds (s, m, h, d)."""
    match = _DURATION.match(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r}: use a positive number and s/m/h/d, e.g. 15m or 1h")
    return int(match.group(1)) * _UNITS[match.group(2)]


Op = tuple[str, Any]  # (name, argument)


def parse_transform(spec: Any) -> Op:
    """A transform spec from the config -> (op, argument); ValueError if malformed."""
    if isinstance(spec, str):
        if spec in ("keep", "drop", "redact"):
            return (spec, None)
        if spec == "mask":
            return ("mask", 2)
        if spec == "pseudonym":
            return ("pseudonym", None)
        raise ValueError(f"unknown transform {spec!r}")
    if isinstance(spec, dict) and len(spec) == 1:
        ((name, arg),) = spec.items()
        if name == "mask" and isinstance(arg, int) and not isinstance(arg, bool) and 0 <= arg <= 8:
            return ("mask", arg)
        if name == "pseudonym" and isinstance(arg, str) and re.match(r"^[a-z][a-z0-9_-]*$", arg):
            return ("pseudonym", arg)
        if name == "h3" and isinstance(arg, int) and not isinstance(arg, bool) and 0 <= arg <= 15:
            return ("h3", arg)
        if name == "bucket" and isinstance(arg, str):
            return ("bucket", parse_duration(arg))
        raise ValueError(f"bad argument for {name!r}: {arg!r}")
    raise ValueError(
        "a transform is keep, drop, redact, mask, pseudonym or one of "
        "{mask: N}, {pseudonym: domain}, {h3: resolution}, {bucket: 15m}"
    )


# --------------------------------------------------------------------------------------------

REDACTED = "[redacted]"


def _mask(value: Any, keep: int) -> str:
    text = str(value)
    shown = text[-keep:] if keep else ""
    return "*" * (len(text) - len(shown)) + shown


def _point(location: Any) -> tuple[float, float] | None:
    if not isinstance(location, dict):
        return None
    if "lat" in location:
        return float(location["lat"]), float(location["lon"])
    if location.get("type") == "Point":
        lon, lat = location["coordinates"][:2]
        return float(lat), float(lon)
    from shapely.geometry import shape  # only for lines and areas

    c = shape(location).centroid
    return float(c.y), float(c.x)


def generalise_location(event: Mapping[str, Any], resolution: int) -> str | None:
    """The event's H3 cell at `resolution` (from its finer `h3cell` when it has one).

    Memoised: the parent of a given cell, and the text of a computed cell (few cells, many
    events); a point is still located exactly, per event."""
    cell = event.get("h3cell")
    if isinstance(cell, str):
        parent = _PARENTS.get((cell, resolution), _UNSET)
        if parent is _UNSET:
            parent = _parent(cell, resolution)
            if len(_PARENTS) > CACHE_MAX:
                _PARENTS.clear()
            _PARENTS[(cell, resolution)] = parent
        if parent is not None:
            return parent
    location = event.get("location")
    if type(location) is dict and "lat" in location:  # the usual form, without a call
        number = _latlng_to_int(float(location["lat"]), float(location["lon"]), resolution)
    else:
        point = _point(location)
        if point is None:
            return None
        number = _latlng_to_int(point[0], point[1], resolution)
    text = _CELL_TEXT.get(number)
    if text is None:
        if len(_CELL_TEXT) > CACHE_MAX:
            _CELL_TEXT.clear()
        text = _CELL_TEXT[number] = h3.int_to_str(number)
    return text


def _parent(cell: str, resolution: int) -> str | None:
    """`cell` at `resolution`, or None when it is not a valid cell at least that fine."""
    if not h3.is_valid_cell(cell):
        return None
    res = h3.get_resolution(cell)
    if res < resolution:
        return None
    return h3.cell_to_parent(cell, resolution) if res > resolution else cell


_UNSET: Any = object()
_PARENTS: dict[tuple[str, int], str | None] = {}
_CELL_TEXT: dict[int, str] = {}
_latlng_to_int = h3.api.basic_int.latlng_to_cell  # the int form: no hex text made per call


_BUCKETS: dict[tuple[str, int], str] = {}


CACHE_MAX = 200_000  # entries per memo (cell centres, time buckets) before it is cleared
_CENTRES: dict[str, tuple[float, float]] = {}


def cell_centre(cell: str) -> dict[str, float]:
    """The centre of an H3 cell as a location point (cached: few cells, many events)."""
    found = _CENTRES.get(cell)
    if found is None:
        if len(_CENTRES) > CACHE_MAX:
            _CENTRES.clear()
        lat, lon = h3.cell_to_latlng(cell)
        found = _CENTRES[cell] = (round(lat, 6), round(lon, 6))
    return {"lat": found[0], "lon": found[1]}


def bucket_time(time_text: str, seconds: int) -> str:
    """Floor an RFC 3339 time to a bucket of `seconds` (UTC, ``Z``).

    Buckets of whole minutes depend only on the minute, so canonical UTC times
    (``2026-11-25T10:07:31Z``) are looked up by their minute prefix.
    """
    canonical = seconds % 60 == 0 and time_text.endswith("Z") and time_text[16:17] == ":"
    if canonical:
        found = _BUCKETS.get((time_text[:16], seconds))
        if found is not None:
            return found
    when = datetime.fromisoformat(time_text.replace("Z", "+00:00"))
    epoch = int(when.timestamp()) // seconds * seconds
    out = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if canonical:
        if len(_BUCKETS) > CACHE_MAX:
            _BUCKETS.clear()
        _BUCKETS[(time_text[:16], seconds)] = out
    return out
