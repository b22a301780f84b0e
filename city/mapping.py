"""Field mappings: where a foreign record (a sensor's JSON payload, a CSV row) keeps the parts
of an event (id, time, lat/lon, subject, priority and the data fields), and `map_record`, which
turns one record into a CloudEvents dict for `EventCatalog.accept` or raises `MappingError`.

A mapping names, per event attribute, a *reference*: a dotted path into a JSON payload
(``pos.lat``), a CSV column name, or ``topic[N]`` (the N-th level of the MQTT topic, from 0).
Event ids are deterministic (`derived_id`), so a record sent twice (a broker's redelivery, a
CSV file run again) is the same event and ingest drops the copy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TOPIC_LEVEL = re.compile(r"^topic\[(\d{1,3})\]$")
MISSING = object()


class MappingError(ValueError):
    """A record that cannot be mapped: `reason` is the dead-letter reason."""

    def __init__(self, message: str, reason: str = "unmappable"):
        self.reason = reason
        super().__init__(message)


class FieldMapping(BaseModel):
    """Where each part of the event is in the record (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(default=None, description="the record's own id (made unique per source)")
    time: str | None = Field(default=None, description="ISO 8601, or epoch seconds/milliseconds")
    lat: str | None = None
    lon: str | None = None
    subject: str | None = None
    priority: str | None = None
    data: dict[str, str] | str = Field(
        default_factory=dict,
        description="payload field -> reference, or one reference to an object",
    )


def derived_id(kind: str, *parts: str | bytes) -> str:
    """A deterministic event id: ``{kind}-`` and 32 hex digits of SHA-256 over the parts."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\x1f")
    return f"{kind}-{digest.hexdigest()[:32]}"


def json_lookup(payload: Any, topic: str = "") -> Callable[[str], Any]:
    """References into a JSON document (dotted paths; ``topic[N]`` from `topic`)."""
    levels = topic.split("/") if topic else []

    def lookup(ref: str) -> Any:
        level = TOPIC_LEVEL.match(ref)
        if level:
            n = int(level.group(1))
            return levels[n] if n < len(levels) else MISSING
        value = payload
        for part in ref.split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return MISSING
        return value

    return lookup


def row_lookup(row: Mapping[str, str]) -> Callable[[str], Any]:
    """References to CSV columns; an empty cell is missing."""

    def lookup(ref: str) -> Any:
        value = row.get(ref)
        return MISSING if value is None or value.strip() == "" else value.strip()

    return lookup


def map_record(
    mapping: FieldMapping,
    lookup: Callable[[str], Any],
    *,
    event_type: str,
    department: str,
    fallback_id: Callable[[], str],
    id_kind: str,
    id_scope: str,
) -> dict[str, Any]:
    """One record -> a CloudEvents dict. The id: ``derived_id(id_kind, id_scope, own id)``
    when the mapping names one and the record has it, else ``fallback_id()``."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "type": event_type,
        "source": f"/city/{department}",
        "department": department,
    }
    own_id = lookup(mapping.id) if mapping.id else MISSING
    missing = own_id is MISSING or own_id is None or own_id == ""
    event["id"] = fallback_id() if missing else derived_id(id_kind, id_scope, str(own_id))
    event["time"] = _time(lookup(mapping.time)) if mapping.time else _now()
    if mapping.lat or mapping.lon:
        lat, lon = _number(lookup, mapping.lat, "lat"), _number(lookup, mapping.lon, "lon")
        event["location"] = {"lat": lat, "lon": lon}
    for name in ("subject", "priority"):
        ref = getattr(mapping, name)
        if ref and (value := lookup(ref)) is not MISSING:
            event[name] = str(value)
    if isinstance(mapping.data, str):
        data = lookup(mapping.data)
        if not isinstance(data, Mapping):
            raise MappingError(f"data: {mapping.data!r} is not an object in the record")
        event["data"] = dict(data)
    else:
        event["data"] = {
            name: value
            for name, ref in mapping.data.items()
            if (value := lookup(ref)) is not MISSING
        }
    return event


def _number(lookup: Callable[[str], Any], ref: str | None, name: str) -> float:
    value: Any = lookup(ref) if ref else MISSING
    if value is MISSING:
        raise MappingError(f"{name}: {ref!r} is missing from the record")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise MappingError(f"{name}: {value!r} is not a number") from None


def _time(value: Any) -> str:
    if value is MISSING:
        return _now()
    if isinstance(value, int | float) or (isinstance(value, str) and _is_number(value)):
        seconds = float(value)
        if seconds > 1e11:  # milliseconds
            seconds /= 1000
        try:
            return datetime.fromtimestamp(seconds, UTC).isoformat()
        except (OverflowError, OSError, ValueError):
            raise MappingError(f"time: {value!r} is not a time") from None
    if isinstance(value, str):
        return value  # ISO 8601, checked by the envelope
    raise MappingError(f"time: {value!r} is not a time")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _now() -> str:
    return datetime.now(UTC).isoformat()
