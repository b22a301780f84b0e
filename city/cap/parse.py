"""CAP 1.2 alerts in: XML -> events.

`events_from_cap(xml)` accepts the document through `city.cap.schema.parse_alert` (safe parse,
work bounds, the CAP 1.2 schema), checks the rules the schema cannot express (polygon and circle
syntax, restricted / private scope), and turns each ``<info>`` block into one `Event`:

- type ``cap.<first category, lower case>`` (``cap.met``, ``cap.fire``...); an alert without
  ``<info>`` (a bare Cancel, Ack or Error) becomes one ``cap.message`` event;
- priority from urgency x severity x certainty (`cap_priority`, table in docs/emergency.md);
- location: the routing geometry as GeoJSON (lon/lat): polygons as they are, circles as
  64-gon approximations in metres, several shapes as a MultiPolygon; radius-0 circles are points;
- data: the alert and info fields (`CapPayload`), geocodes kept per area, ``expires`` also
  given as ``deadline`` (UTC) for the delivery deadline;
- id: deterministic from (sender, identifier, info index), so republishing an alert dedupes;
- ``signature``: an extension attribute, what the alert's XML-DSig signature is worth against
  the certificates in `trust` (``valid | invalid | unverified | absent``, `city.cap.signature`).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from city.cap.geometry import circle_polygon, parse_circle, parse_polygon, routing_geometry
from city.cap.model import MESSAGE_TYPE, CapArea, CapError, CapPayload, CapResource, NameValue, _q
from city.cap.priority import _message_priority, cap_priority
from city.cap.schema import accept_alert
from city.cap.signature import NO_TRUST, CapTrust, SignatureResult
from city.events import MAX_EVENT_BYTES, Event, Priority, source_for

# Fixed namespace for uuid5 event ids: the same alert always yields the same ids.
CAP_ID_NAMESPACE = uuid.UUID("0f6b9d0e-8f4c-5b7e-9c61-3c1a2e0d4b57")


def _text(parent: ET.Element, name: str) -> str | None:
    child = parent.find(_q(name))
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def _texts(parent: ET.Element, name: str) -> list[str]:
    return [(c.text or "").strip() for c in parent.findall(_q(name))]


def _pairs(parent: ET.Element, name: str) -> list[NameValue]:
    return [
        NameValue(name=_text(c, "valueName") or "", value=_text(c, "value") or "")
        for c in parent.findall(_q(name))
    ]


def _header(root: ET.Element) -> dict[str, Any]:
    header = {
        "identifier": _text(root, "identifier"),
        "sender": _text(root, "sender"),
        "sent": _text(root, "sent"),
        "status": _text(root, "status"),
        "msg_type": _text(root, "msgType"),
        "scope": _text(root, "scope"),
        "source": _text(root, "source"),
        "restriction": _text(root, "restriction"),
        "addresses": _text(root, "addresses"),
        "codes": [c for c in _texts(root, "code") if c],
        "note": _text(root, "note"),
        "references": _text(root, "references"),
        "incidents": _text(root, "incidents"),
    }
    for required in ("identifier", "sender"):
        if not header[required]:
            raise CapError(f"<{required}> must not be empty")
    if header["scope"] == "Restricted" and not header["restriction"]:
        raise CapError("scope Restricted requires a <restriction>")
    if header["scope"] == "Private" and not header["addresses"]:
        raise CapError("scope Private requires <addresses>")
    return header


def _areas(info: ET.Element, where: str) -> tuple[list[CapArea], dict[str, Any] | None]:
    areas: list[CapArea] = []
    polygons: list[list[list[list[float]]]] = []
    points: list[list[float]] = []
    for a, area in enumerate(info.findall(_q("area"))):
        spot = f"{where}/area[{a + 1}]"
        polygon_texts = [t for t in _texts(area, "polygon") if t]  # empty <polygon/>: no shape
        circle_texts = [t for t in _texts(area, "circle") if t]
        for p, text in enumerate(polygon_texts):
            polygons.append([parse_polygon(text, f"{spot}/polygon[{p + 1}]")])
        for c, text in enumerate(circle_texts):
            lon, lat, radius_m = parse_circle(text, f"{spot}/circle[{c + 1}]")
            if radius_m == 0:
                points.append([lon, lat])
            else:
                polygons.append([circle_polygon(lon, lat, radius_m)])
        altitude, ceiling = _text(area, "altitude"), _text(area, "ceiling")
        areas.append(
            CapArea(
                desc=_text(area, "areaDesc") or "",
                polygons=polygon_texts,
                circles=circle_texts,
                geocodes=_pairs(area, "geocode"),
                altitude=float(altitude) if altitude else None,
                ceiling=float(ceiling) if ceiling else None,
            )
        )
    return areas, routing_geometry(polygons, points)


def _resources(info: ET.Element) -> list[CapResource]:
    resources = []
    for res in info.findall(_q("resource")):
        size = _text(res, "size")
        resources.append(
            CapResource(
                desc=_text(res, "resourceDesc") or "",
                mime_type=_text(res, "mimeType") or "",
                size=int(size) if size else None,
                uri=_text(res, "uri"),
                digest=_text(res, "digest"),
                deref_omitted=_text(res, "derefUri") is not None,
            )
        )
    return resources


def _cap_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except (ValueError, OverflowError):  # 9999-12-31T23:59:59-12:00 is past year 9999 in UTC
        raise CapError(f"time {value!r} is not representable in UTC") from None


def _info_payload(
    header: dict[str, Any], info: ET.Element, index: int
) -> tuple[CapPayload, dict[str, Any] | None]:
    where = f"/alert/info[{index + 1}]"
    areas, geometry = _areas(info, where)
    expires = _text(info, "expires")
    payload = CapPayload.model_validate(
        dict(
            **header,
            info_index=index,
            language=_text(info, "language"),
            categories=_texts(info, "category"),
            event=_text(info, "event"),
            response_types=_texts(info, "responseType"),
            urgency=_text(info, "urgency"),
            severity=_text(info, "severity"),
            certainty=_text(info, "certainty"),
            audience=_text(info, "audience"),
            event_codes=_pairs(info, "eventCode"),
            effective=_text(info, "effective"),
            onset=_text(info, "onset"),
            expires=expires,
            deadline=_cap_time(expires),
            sender_name=_text(info, "senderName"),
            headline=_text(info, "headline"),
            description=_text(info, "description"),
            instruction=_text(info, "instruction"),
            web=_text(info, "web"),
            contact=_text(info, "contact"),
            parameters=_pairs(info, "parameter"),
            resources=_resources(info),
            areas=areas,
        )
    )
    return payload, geometry


def cap_event_id(sender: str, identifier: str, info_index: int) -> str:
    """Deterministic event id for one info block of one alert (uuid5, hex)."""
    return uuid.uuid5(CAP_ID_NAMESPACE, f"{sender}\n{identifier}\n{info_index}").hex


def events_from_cap(
    xml: bytes | str, department: str | None = None, trust: CapTrust = NO_TRUST
) -> list[Event]:
    """The events one CAP alert becomes (one per ``<info>``; one ``cap.message`` if none).

    `department` is the publishing department (sets ``source`` and ``department``); without it
    the source is ``/cap/<sender>``. `trust`: the certificates the signature is checked
    against, and whether a valid one is required. Raises `CapError` for anything that is not
    valid CAP (or, when a signature is required, not validly signed).
    """
    return events_and_signature(xml, department, trust)[0]


def events_and_signature(
    xml: bytes | str, department: str | None = None, trust: CapTrust = NO_TRUST
) -> tuple[list[Event], SignatureResult]:
    """`events_from_cap`, plus the signature result with its reason (for people)."""
    accepted = accept_alert(xml, trust)
    root = accepted.root
    header = _header(root)
    sent = _cap_time(header["sent"])
    source = source_for(department) if department else "/cap/" + quote(header["sender"], safe="@.")
    infos = root.findall(_q("info"))
    built: list[tuple[str, CapPayload, dict[str, Any] | None, Priority]] = []
    if not infos:
        built.append((MESSAGE_TYPE, CapPayload(**header), None, _message_priority(header)))
    for index, info in enumerate(infos):
        payload, geometry = _info_payload(header, info, index)
        priority = cap_priority(
            payload.urgency or "Unknown",
            payload.severity or "Unknown",
            payload.certainty or "Unknown",
            header["status"],
            header["msg_type"],
        )
        built.append((f"cap.{payload.categories[0].lower()}", payload, geometry, priority))
    events = []
    for index, (event_type, payload, geometry, priority) in enumerate(built):
        try:
            event = Event.model_validate(
                {
                    "id": cap_event_id(header["sender"], header["identifier"], index),
                    "source": source,
                    "type": event_type,
                    "time": sent,
                    "subject": header["identifier"][:256],
                    "data": payload.model_dump(mode="json", exclude_none=True),
                    "priority": priority,
                    "location": geometry,
                    "department": department,
                    "signature": str(accepted.signature.status),
                }
            )
        except ValidationError as exc:
            raise CapError(f"/alert/info[{index + 1}] cannot become an event: {exc}") from None
        size = len(event.model_dump_json(exclude_none=True))
        if size > MAX_EVENT_BYTES:
            raise CapError(
                f"/alert/info[{index + 1}] becomes an event of {size} bytes, over the"
                f" {MAX_EVENT_BYTES}-byte event limit (shorten the description or areas)",
                "too_large",
            )
        events.append(event)
    return events, accepted.signature
