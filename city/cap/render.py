"""CAP 1.2 alerts out: `event_to_cap(event)` renders any event as a CAP 1.2 alert that
validates against the same schema (`city/data/cap12.xsd`), for public warning systems."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from city.cap.geometry import geometry_to_cap
from city.cap.model import CAP12_NS, CapError, CapPayload, NameValue, _q
from city.events import Event, Priority

# Non-CAP events: category from the type's first word; urgency/severity/certainty from priority.
CATEGORY_BY_DOMAIN = {
    "traffic": "Transport", "transit": "Transport", "utility": "Infra", "environment": "Env",
    "safety": "Safety", "health": "Health", "fire": "Fire", "police": "Security",
    "weather": "Met", "geo": "Geo", "rescue": "Rescue", "hazmat": "CBRNE",
}  # fmt: skip
USC_BY_PRIORITY = {
    Priority.EMERGENCY: ("Immediate", "Severe", "Observed"),
    Priority.HIGH: ("Expected", "Moderate", "Likely"),
    Priority.ROUTINE: ("Future", "Minor", "Possible"),
    Priority.BULK: ("Unknown", "Minor", "Unknown"),
}
# Only these payload fields reach a public alert's text: never identifiers of people.
PUBLIC_TEXT_FIELDS = ("description", "nature", "kind", "alarm", "road")


def cap_time(value: datetime) -> str:
    """A datetime in CAP's format: seconds precision, numeric offset, UTC as -00:00."""
    value = value.astimezone(UTC).replace(microsecond=0)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + "-00:00"


def event_to_cap(
    event: Event,
    *,
    sender: str | None = None,
    status: str = "Actual",
    scope: str = "Public",
) -> str:
    """Render an event as a CAP 1.2 alert (XML text) that validates against the schema.

    A ``cap.*`` event produced by `events_from_cap` renders back to its original alert header
    and info block (unless another `sender` is given, in which case the city is the sender and
    the event id the identifier). Any other event becomes a one-info alert: category from the
    type's domain, urgency/severity/certainty from its priority, area from its location. Only
    the payload fields in `PUBLIC_TEXT_FIELDS` are used for text: pass the public view.
    """
    data = event.data or {}
    payload: CapPayload | None = None
    if event.type.startswith("cap.") and data:
        try:
            payload = CapPayload.model_validate(data)
        except ValidationError as exc:
            raise CapError(f"event {event.id}: data is not a CAP payload: {exc}") from None
    root = ET.Element(_q("alert"))
    if payload is not None and sender is None:
        _add(root, "identifier", payload.identifier)
        _add(root, "sender", payload.sender)
        _add(root, "sent", payload.sent)
        _add(root, "status", payload.status)
        _add(root, "msgType", payload.msg_type)
        _add(root, "source", payload.source)
        _add(root, "scope", payload.scope)
        _add(root, "restriction", payload.restriction)
        _add(root, "addresses", payload.addresses)
        for code in payload.codes:
            _add(root, "code", code)
        _add(root, "note", payload.note)
        _add(root, "references", payload.references)
        _add(root, "incidents", payload.incidents)
    else:
        _add(root, "identifier", event.id)
        _add(root, "sender", sender or f"cityrelay@{event.department or 'city'}")
        _add(root, "sent", cap_time(event.time))
        _add(root, "status", status)
        _add(root, "msgType", payload.msg_type if payload else "Alert")
        _add(root, "source", event.source)
        _add(root, "scope", scope)
        if scope == "Restricted":
            _add(root, "restriction", "cityrelay departments")
    if payload is not None and payload.event is not None:
        _add_cap_info(root, payload)
    elif payload is None:
        _add_event_info(root, event, data)
    ET.indent(root)  # whitespace between elements only: leaf text is untouched
    xml = ET.tostring(root, encoding="unicode", default_namespace=CAP12_NS)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + xml


def _add(parent: ET.Element, name: str, value: object | None) -> ET.Element | None:
    if value is None:
        return None
    child = ET.SubElement(parent, _q(name))
    child.text = str(value)
    return child


def _add_pairs(parent: ET.Element, name: str, pairs: Iterable[NameValue]) -> None:
    for pair in pairs:
        node = ET.SubElement(parent, _q(name))
        _add(node, "valueName", pair.name)
        _add(node, "value", pair.value)


def _add_cap_info(root: ET.Element, p: CapPayload) -> None:
    info = ET.SubElement(root, _q("info"))
    _add(info, "language", p.language)
    for category in p.categories:
        _add(info, "category", category)
    _add(info, "event", p.event)
    for response in p.response_types:
        _add(info, "responseType", response)
    _add(info, "urgency", p.urgency)
    _add(info, "severity", p.severity)
    _add(info, "certainty", p.certainty)
    _add(info, "audience", p.audience)
    _add_pairs(info, "eventCode", p.event_codes)
    for name in ("effective", "onset", "expires"):
        _add(info, name, getattr(p, name))
    for name, tag in (
        ("sender_name", "senderName"), ("headline", "headline"), ("description", "description"),
        ("instruction", "instruction"), ("web", "web"), ("contact", "contact"),
    ):  # fmt: skip
        _add(info, tag, getattr(p, name))
    _add_pairs(info, "parameter", p.parameters)
    for res in p.resources:
        node = ET.SubElement(info, _q("resource"))
        _add(node, "resourceDesc", res.desc)
        _add(node, "mimeType", res.mime_type)
        _add(node, "size", res.size)
        _add(node, "uri", res.uri)
        _add(node, "digest", res.digest)
    for area in p.areas:
        node = ET.SubElement(info, _q("area"))
        _add(node, "areaDesc", area.desc)
        for polygon in area.polygons:
            _add(node, "polygon", polygon)
        for circle in area.circles:
            _add(node, "circle", circle)
        _add_pairs(node, "geocode", area.geocodes)
        _add(node, "altitude", area.altitude)
        _add(node, "ceiling", area.ceiling)


def _add_event_info(root: ET.Element, event: Event, data: dict[str, Any]) -> None:
    priority = event.priority or Priority.ROUTINE
    urgency, severity, certainty = USC_BY_PRIORITY[priority]
    domain = event.type.split(".", 1)[0]
    info = ET.SubElement(root, _q("info"))
    _add(info, "category", CATEGORY_BY_DOMAIN.get(domain, "Other"))
    _add(info, "event", event.type)
    _add(info, "urgency", urgency)
    _add(info, "severity", severity)
    _add(info, "certainty", certainty)
    deadline = data.get("deadline") or data.get("expires")
    if isinstance(deadline, str):
        try:
            _add(info, "expires", cap_time(datetime.fromisoformat(deadline)))
        except ValueError:
            raise CapError(
                f"event {event.id}: deadline {deadline!r} is not an ISO 8601 time"
            ) from None
    _add(info, "senderName", event.department or event.source)
    _add(info, "headline", f"{event.type} from {event.department or event.source}"[:160])
    text = [f"{name}: {data[name]}" for name in PUBLIC_TEXT_FIELDS if data.get(name) is not None]
    _add(info, "description", "\n".join(text) if text else None)
    _add_pairs(info, "parameter", [NameValue(name="cityrelay:event-id", value=event.id)])
    if event.location is not None:
        area = ET.SubElement(info, _q("area"))
        _add(area, "areaDesc", f"location reported by {event.department or event.source}")
        shapes = geometry_to_cap(event.location.model_dump())
        for polygon in shapes["polygons"]:
            _add(area, "polygon", polygon)
        for circle in shapes["circles"]:
            _add(area, "circle", circle)
