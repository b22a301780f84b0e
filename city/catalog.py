"""The event catalogue: which event types exist, their payload schemas and priorities.

`EventCatalog.accept` is the one validation every event passes at ingest. It is compiled once
from the city config and costs a few microseconds per event; it either returns the normalised
wire form or raises `InvalidEvent` with a machine-readable reason and a message for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from city.cap import CAP_TYPES, NO_TRUST, trust_from_config
from city.config import CityConfig
from city.events import Event, Priority
from city.schemas import BUILTIN_TYPES, model_from_fields

SOURCE_PREFIX = "/city/"


class InvalidEvent(ValueError):
    """An event refused at ingest. `reason` is a short code; the message explains."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class EventType:
    name: str
    payload: type[BaseModel]
    priority: Priority


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        # Drop pydantic's union/validator tags ("PointLocation", "function-after[...]").
        parts_of_path = [str(p) for p in err["loc"] if not _is_tag(p)]
        where = ".".join(parts_of_path) or "<event>"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _is_tag(part: object) -> bool:
    return isinstance(part, str) and ("[" in part or part[:1].isupper())


class EventCatalog:
    """Event types known to the city: the built-ins plus those the config registers."""

    def __init__(self, config: CityConfig | None = None, max_event_bytes: int | None = None):
        self.types: dict[str, EventType] = {
            name: EventType(name, model, priority)
            for name, (model, priority) in {**BUILTIN_TYPES, **CAP_TYPES}.items()
        }
        if config is not None:
            for name, spec in config.event_types.items():
                known = self.types.get(name)
                model = (
                    model_from_fields(name, spec.fields)
                    if spec.fields is not None
                    else known.payload  # type: ignore[union-attr]
                )
                priority = spec.priority or known.priority  # type: ignore[union-attr]
                self.types[name] = EventType(name, model, priority)
        self.max_event_bytes = max_event_bytes or (
            config.routing.max_event_bytes if config else 64 * 1024
        )
        # Raw CAP alerts' signatures are checked against these (queues/ingest_decode.py).
        self.cap_trust = trust_from_config(config.cap) if config is not None else NO_TRUST

    def register(self, name: str, payload: type[BaseModel], priority: Priority) -> None:
        self.types[name] = EventType(name, payload, priority)

    def priority_of(self, event_type: str, explicit: str | None = None) -> Priority:
        """The event's own priority if it states one, else its type's."""
        if explicit:
            return Priority(explicit)
        known = self.types.get(event_type)
        return known.priority if known else Priority.ROUTINE

    def accept(self, raw: bytes | str, department: str) -> dict[str, Any]:
        """Validate one raw event that arrived on `department`'s stream; return its wire form.

        Checks, in order: size, JSON + envelope, known type, payload schema, and that the event
        does not claim another department (a forged source). Fills `department` and `priority`.
        """
        if len(raw) > self.max_event_bytes:
            raise InvalidEvent(
                "too_large", f"event is {len(raw)} bytes; the limit is {self.max_event_bytes}"
            )
        try:
            event = Event.model_validate_json(raw)
        except ValidationError as exc:
            kind = (
                "malformed_json"
                if exc.errors()[0]["type"] == "json_invalid"
                else "invalid_envelope"
            )
            raise InvalidEvent(kind, _first_errors(exc)) from None
        spec = self.types.get(event.type)
        if spec is None:
            raise InvalidEvent(
                "unknown_type",
                f"event type {event.type!r} is not registered "
                "(add it under event_types: in the city config)",
            )
        try:
            payload = spec.payload.model_validate(event.data if event.data is not None else {})
        except ValidationError as exc:
            raise InvalidEvent(
                "invalid_payload", f"{event.type} data: {_first_errors(exc)}"
            ) from None
        claimed = event.department
        if claimed is not None and claimed != department:
            raise InvalidEvent(
                "forged_source",
                f"event claims department {claimed!r} but arrived on {department!r}'s stream",
            )
        if event.source.startswith(SOURCE_PREFIX):
            owner = event.source[len(SOURCE_PREFIX) :].split("/", 1)[0]
            if owner != department:
                raise InvalidEvent(
                    "forged_source",
                    f"source {event.source!r} names department {owner!r} "
                    f"but the event arrived on {department!r}'s stream",
                )
        wire = event.to_wire()
        wire["data"] = payload.model_dump(mode="json", exclude_unset=True)
        wire["department"] = department
        wire["priority"] = str(event.priority or spec.priority)
        return wire
