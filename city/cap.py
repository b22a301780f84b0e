"""OASIS Common Alerting Protocol (CAP 1.2) alerts in and out.

In: `events_from_cap(xml)` parses an alert safely (defusedxml refuses entity expansion and
external entities), validates it against the CAP 1.2 schema (`city/data/cap12.xsd`, the
OASIS file, so enumerations, required elements, element order and date formats are exactly the
standard's) plus the rules the schema cannot express (polygon and circle syntax, restricted /
private scope), and turns each ``<info>`` block into one `Event`:

- type ``cap.<first category, lower case>`` (``cap.met``, ``cap.fire``...); an alert without
  ``<info>`` (a bare Cancel, Ack or Error) becomes one ``cap.message`` event;
- priority from urgency x severity x certainty (`cap_priority`, table in docs/emergency.md);
- location: the routing geometry as GeoJSON (lon/lat): polygons as they are, circles as
  64-gon approximations in metres, several shapes as a MultiPolygon; radius-0 circles are points;
- data: the alert and info fields (`CapPayload`), geocodes kept per area, ``expires`` also
  given as ``deadline`` (UTC) for the delivery deadline;
- id: deterministic from (sender, identifier, info index), so republishing an alert dedupes.

CAP 1.1 documents (still served by some feeds, e.g. the NWS atom index) are accepted by reading
them as 1.2: the two versions share every element cityrelay uses.

Out: `event_to_cap(event)` renders any event as a CAP 1.2 alert that validates against the
same schema, for public warning systems.
"""

from __future__ import annotations

import math
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from city.events import MAX_EVENT_BYTES, Event, Priority, source_for

CAP12_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CAP11_NS = "urn:oasis:names:tc:emergency:cap:1.1"
SCHEMA_PATH = Path(__file__).parent / "data" / "cap12.xsd"
# Checked before parsing. The sample alerts (tests/data/cap) are 2-5 KiB and each info block
# must fit one 64 KiB event anyway; 1 MiB bounds the time one hostile document can hold ingest.
# An alert embedding large resources (<derefUri>, base64 audio or images, not carried in the
# events) can exceed it: such feeds must be relayed without the embedded content.
MAX_CAP_BYTES = 1024 * 1024
# Work bounds checked on the parsed tree BEFORE schema validation and geometry, which cost
# ~50 us per element and ~1 ms per circle: without them one hostile 1 MiB document (13,000
# parameters, or 35,000 circles) held ingest for 2 to 46 seconds. Real alerts are far below:
# the NWS and IPAWS samples have under 100 elements and one or two info blocks.
MAX_CAP_ELEMENTS = 10_000
MAX_CAP_INFOS = 64
MAX_CAP_VERTICES = 20_000  # routing-geometry vertices in all info blocks (a circle makes 65)
CIRCLE_VERTICES = 65  # CIRCLE_SEGMENTS + the closing vertex
# Fixed namespace for uuid5 event ids: the same alert always yields the same ids.
CAP_ID_NAMESPACE = uuid.UUID("0f6b9d0e-8f4c-5b7e-9c61-3c1a2e0d4b57")
EARTH_RADIUS_M = 6_371_008.8
CIRCLE_SEGMENTS = 64

CATEGORIES = (
    "Geo", "Met", "Safety", "Security", "Rescue", "Fire",
    "Health", "Env", "Transport", "Infra", "CBRNE", "Other",
)  # fmt: skip
MESSAGE_TYPE = "cap.message"

Urgency = Literal["Immediate", "Expected", "Future", "Past", "Unknown"]
Severity = Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown"]
Certainty = Literal["Observed", "Likely", "Possible", "Unlikely", "Unknown"]


class CapError(ValueError):
    """The input is not a CAP alert cityrelay can accept; the message says why and where.

    `reason` is a short code for the dead-letter stream: ``too_large`` (before parsing, or an
    info block too big for one event), ``unsafe_xml`` (DTD, entity declarations, external
    references), ``malformed_xml`` (not well-formed, or an encoding the parser cannot read),
    ``invalid_cap`` (well-formed XML that is not valid CAP 1.2: namespace, schema, geometry).
    """

    def __init__(self, message: str, reason: str = "invalid_cap"):
        self.reason = reason
        super().__init__(message)


# --- priority --------------------------------------------------------------------------------

# Each axis scores 0..3; "Unknown" scores like the middle so it neither pages nor is buried.
URGENCY_SCORE = {"Immediate": 3, "Expected": 2, "Future": 1, "Unknown": 1, "Past": 0}
SEVERITY_SCORE = {"Extreme": 3, "Severe": 2, "Moderate": 1, "Unknown": 1, "Minor": 0}
CERTAINTY_SCORE = {"Observed": 3, "Likely": 2, "Possible": 1, "Unknown": 1, "Unlikely": 0}


def cap_priority(
    urgency: str,
    severity: str,
    certainty: str,
    status: str = "Actual",
    msg_type: str = "Alert",
) -> Priority:
    """The priority of one CAP info block.

    - emergency: urgency Immediate/Expected AND severity Extreme/Severe AND certainty
      Observed/Likely (the threshold US Wireless Emergency Alerts use for imminent threats);
    - high: otherwise, when the three scores sum to 6 or more (e.g. Past+Extreme+Observed,
      Immediate+Moderate+Observed);
    - routine: a sum of 3 to 5;  bulk: below 3.
    Then caps: Test/System/Draft alerts are at most bulk (they must never page anyone);
    Cancel messages at most high, Ack/Error at most routine (nothing to respond to).
    """
    u, s, c = URGENCY_SCORE[urgency], SEVERITY_SCORE[severity], CERTAINTY_SCORE[certainty]
    if u >= 2 and s >= 2 and c >= 2:
        priority = Priority.EMERGENCY
    elif u + s + c >= 6:
        priority = Priority.HIGH
    elif u + s + c >= 3:
        priority = Priority.ROUTINE
    else:
        priority = Priority.BULK
    floor = Priority.EMERGENCY
    if status in ("Test", "System", "Draft"):
        floor = Priority.BULK
    elif msg_type == "Cancel":
        floor = Priority.HIGH
    elif msg_type in ("Ack", "Error"):
        floor = Priority.ROUTINE
    return priority if priority.rank >= floor.rank else floor


# --- payload model (registered per CAP event type) -------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NameValue(_Frozen):
    name: str
    value: str


class CapResource(_Frozen):
    desc: str
    mime_type: str
    size: int | None = None
    uri: str | None = None
    digest: str | None = None
    # derefUri (embedded base64 content) is not carried: events stay small. True when dropped.
    deref_omitted: bool = False


class CapArea(_Frozen):
    desc: str
    polygons: list[str] = Field(default_factory=list)
    circles: list[str] = Field(default_factory=list)
    geocodes: list[NameValue] = Field(default_factory=list)
    altitude: float | None = None
    ceiling: float | None = None


class CapPayload(_Frozen):
    """`data` of every ``cap.*`` event: the alert header plus one info block (CAP names)."""

    identifier: str
    sender: str
    sent: str
    status: Literal["Actual", "Exercise", "System", "Test", "Draft"]
    msg_type: Literal["Alert", "Update", "Cancel", "Ack", "Error"]
    scope: Literal["Public", "Restricted", "Private"]
    source: str | None = None
    restriction: str | None = None
    addresses: str | None = None
    codes: list[str] = Field(default_factory=list)
    note: str | None = None
    references: str | None = None
    incidents: str | None = None
    info_index: int | None = None
    language: str | None = None
    categories: list[str] = Field(default_factory=list)
    event: str | None = None
    response_types: list[str] = Field(default_factory=list)
    urgency: Urgency | None = None
    severity: Severity | None = None
    certainty: Certainty | None = None
    audience: str | None = None
    event_codes: list[NameValue] = Field(default_factory=list)
    effective: str | None = None
    onset: str | None = None
    expires: str | None = None
    deadline: datetime | None = Field(default=None, description="expires, in UTC")
    sender_name: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    web: str | None = None
    contact: str | None = None
    parameters: list[NameValue] = Field(default_factory=list)
    resources: list[CapResource] = Field(default_factory=list)
    areas: list[CapArea] = Field(default_factory=list)


def _cap_types() -> dict[str, tuple[type[BaseModel], Priority]]:
    types: dict[str, tuple[type[BaseModel], Priority]] = {
        f"cap.{category.lower()}": (CapPayload, Priority.HIGH) for category in CATEGORIES
    }
    types[MESSAGE_TYPE] = (CapPayload, Priority.ROUTINE)
    return types


# type -> (payload model, default priority), shaped like city.schemas.BUILTIN_TYPES.
# Events built here always carry their own priority; the default covers hand-made ones.
CAP_TYPES: dict[str, tuple[type[BaseModel], Priority]] = _cap_types()


# --- parsing ---------------------------------------------------------------------------------


@cache
def _schema() -> Any:
    import xmlschema  # imported lazily: compiling the schema costs ~0.1 s, once per process

    return xmlschema.XMLSchema(str(SCHEMA_PATH))


def parse_alert(xml: bytes | str) -> ET.Element:
    """Parse and validate a CAP alert; returns its root element in the CAP 1.2 namespace."""
    root = _safe_root(xml)
    if root.tag == f"{{{CAP11_NS}}}alert":
        _rename_namespace(root, CAP11_NS, CAP12_NS)
    if root.tag != f"{{{CAP12_NS}}}alert":
        raise CapError(
            f"not a CAP 1.2 alert: root element is {root.tag!r}, expected <alert> in {CAP12_NS}"
        )
    _check_work_bounds(root)
    problems = [
        _describe(err) for _, err in zip(range(5), _schema().iter_errors(root), strict=False)
    ]
    if problems:
        raise CapError("not valid CAP 1.2: " + "; ".join(problems))
    return root


def _check_work_bounds(root: ET.Element) -> None:
    """Refuse, as ``too_large``, what could only become events over the size limit, before
    spending time on it: too many elements or info blocks, or an info block whose carried text
    plus routing-geometry vertices (a lower bound of its event's JSON size) is over the limit."""
    elements = sum(1 for _ in root.iter())
    if elements > MAX_CAP_ELEMENTS:
        raise CapError(
            f"CAP alert has {elements} XML elements; the limit is {MAX_CAP_ELEMENTS}", "too_large"
        )
    infos = root.findall(_q("info"))
    if len(infos) > MAX_CAP_INFOS:
        raise CapError(
            f"CAP alert has {len(infos)} info blocks; the limit is {MAX_CAP_INFOS}", "too_large"
        )
    total_vertices = 0
    for index, info in enumerate(infos):
        text, vertices = _info_size(info)
        least = text + 6 * vertices  # each vertex is at least "[0,0]," in the event's JSON
        if least > MAX_EVENT_BYTES:
            raise CapError(
                f"/alert/info[{index + 1}] becomes an event of at least {least} bytes, over the"
                f" {MAX_EVENT_BYTES}-byte event limit (shorten the description or areas)",
                "too_large",
            )
        total_vertices += vertices
    if total_vertices > MAX_CAP_VERTICES:
        raise CapError(
            f"CAP alert has {total_vertices} routing-geometry vertices (a circle makes"
            f" {CIRCLE_VERTICES}); the limit is {MAX_CAP_VERTICES}",
            "too_large",
        )


def _info_size(info: ET.Element) -> tuple[int, int]:
    """(characters of text, routing-geometry vertices) of an info block: every text it holds
    is carried in its event (except embedded resources, ``derefUri``); a circle with a radius
    becomes 65 vertices."""
    text = 0
    vertices = 0
    for element in info.iter():
        if element.tag == _q("derefUri"):
            continue
        value = (element.text or "").strip()
        text += len(value)
        if element.tag == _q("polygon"):
            vertices += len(value.split())
        elif element.tag == _q("circle"):
            vertices += 1 if _zero_radius(value) else CIRCLE_VERTICES
    return text, vertices


def _zero_radius(circle: str) -> bool:
    parts = circle.split()
    try:
        return len(parts) == 2 and float(parts[1]) == 0
    except ValueError:
        return False


def _safe_root(xml: bytes | str) -> ET.Element:
    """Parse without trusting the document: size first, then no DTD at all (CAP never needs
    one; refusing it also refuses entity expansion and external DTD/entity references)."""
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    if len(xml) > MAX_CAP_BYTES:
        raise CapError(f"CAP alert is {len(xml)} bytes; the limit is {MAX_CAP_BYTES}", "too_large")
    try:
        return SafeET.fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise CapError(f"refused unsafe XML ({type(exc).__name__}): {exc}", "unsafe_xml") from None
    except ET.ParseError as exc:
        raise CapError(f"not well-formed XML: {exc}", "malformed_xml") from None
    except (ValueError, LookupError) as exc:
        # expat hands declared encodings it lacks to Python: unknown names raise LookupError,
        # multi-byte ones (utf-7, shift_jis...) ValueError.
        raise CapError(f"unreadable XML encoding: {exc}", "malformed_xml") from None


def alert_priority(xml: bytes | str) -> Priority | None:
    """The highest priority the alert's info blocks will have, from a parse WITHOUT schema
    validation (0.1-0.2 ms, a fifth of `events_from_cap`: for a producer choosing a lane).
    None when the document is not even a readable alert (ingest will dead-letter it). Values
    outside CAP's enumerations count as Unknown here; ingest refuses them."""
    try:
        root = _safe_root(xml)
    except CapError:
        return None
    ns = next((n for n in (CAP12_NS, CAP11_NS) if root.tag == f"{{{n}}}alert"), None)
    if ns is None:
        return None

    def text(parent: ET.Element, name: str) -> str:
        return (parent.findtext(f"{{{ns}}}{name}") or "").strip()

    status, msg_type = text(root, "status"), text(root, "msgType")
    infos = root.findall(f"{{{ns}}}info")
    if not infos:
        return _message_priority({"status": status, "msg_type": msg_type})
    best = Priority.BULK
    for info in infos:
        u, s, c = (text(info, name) for name in ("urgency", "severity", "certainty"))
        priority = cap_priority(
            u if u in URGENCY_SCORE else "Unknown",
            s if s in SEVERITY_SCORE else "Unknown",
            "Likely" if c == "Very Likely" else c if c in CERTAINTY_SCORE else "Unknown",
            status,
            msg_type,
        )
        best = priority if priority.rank < best.rank else best  # lower rank: more urgent
    return best


def _describe(err: Any) -> str:
    got = f" (got {err.obj!r})" if isinstance(err.obj, str) else ""
    return f"{err.path}: {err.reason}{got}".replace(f"{{{CAP12_NS}}}", "")


def _rename_namespace(root: ET.Element, old: str, new: str) -> None:
    prefix = f"{{{old}}}"
    for element in root.iter():
        if element.tag.startswith(prefix):
            element.tag = f"{{{new}}}{element.tag[len(prefix) :]}"
        if element.tag == f"{{{new}}}certainty" and (element.text or "").strip() == "Very Likely":
            element.text = "Likely"  # CAP 1.1 kept 1.0's "Very Likely"; 1.2 folds it into Likely


def _q(name: str) -> str:
    return f"{{{CAP12_NS}}}{name}"


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


def _parse_point(pair: str, where: str) -> tuple[float, float]:
    """A CAP "lat,lon" pair as (lon, lat), range-checked."""
    try:
        lat_s, lon_s = pair.split(",")
        lat, lon = float(lat_s), float(lon_s)
    except ValueError:
        raise CapError(f"{where}: {pair!r} is not a 'latitude,longitude' pair") from None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise CapError(f"{where}: {pair!r} is outside latitude/longitude range")
    return lon, lat


def parse_polygon(text: str, where: str = "polygon") -> list[list[float]]:
    """A CAP polygon (space-separated "lat,lon" pairs, closed, >= 4 pairs) as a GeoJSON ring."""
    ring = [list(_parse_point(pair, where)) for pair in text.split()]
    if len(ring) < 4:
        raise CapError(f"{where}: a polygon needs at least 4 coordinate pairs, got {len(ring)}")
    if ring[0] != ring[-1]:
        raise CapError(f"{where}: the first and last coordinate pairs must be the same")
    if _signed_area(ring) < 0:
        ring.reverse()  # RFC 7946: exterior rings counter-clockwise
    return ring


def _signed_area(ring: list[list[float]]) -> float:
    return sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(ring, ring[1:], strict=False)) / 2


def parse_circle(text: str, where: str = "circle") -> tuple[float, float, float]:
    """A CAP circle "lat,lon radius_km" as (lon, lat, radius in metres)."""
    parts = text.split()
    if len(parts) != 2:
        raise CapError(f"{where}: {text!r} is not 'latitude,longitude radius_km'")
    lon, lat = _parse_point(parts[0], where)
    try:
        radius_km = float(parts[1])
    except ValueError:
        raise CapError(f"{where}: radius {parts[1]!r} is not a number") from None
    if not (math.isfinite(radius_km) and radius_km >= 0):
        raise CapError(f"{where}: radius must be a finite number of kilometres >= 0")
    return lon, lat, radius_km * 1000.0


def circle_polygon(
    lon: float, lat: float, radius_m: float, segments: int = CIRCLE_SEGMENTS
) -> list[list[float]]:
    """A closed counter-clockwise ring approximating a circle on the sphere (great-circle)."""
    phi1, lam1 = math.radians(lat), math.radians(lon)
    delta = radius_m / EARTH_RADIUS_M
    if delta >= math.pi / 2 - abs(phi1):
        # The circle contains a pole: its vertices never reach latitude 90, but the lon/lat ring
        # through them would describe a band around the pole, not the cap containing it.
        raise CapError(
            f"circle at {lat},{lon} with radius {radius_m / 1000:g} km contains a pole;"
            " describe the area with polygons instead"
        )
    ring: list[list[float]] = []
    for i in range(segments):
        theta = -2 * math.pi * i / segments  # clockwise bearings -> counter-clockwise ring
        phi2 = math.asin(
            math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
        )
        lam2 = lam1 + math.atan2(
            math.sin(theta) * math.sin(delta) * math.cos(phi1),
            math.cos(delta) - math.sin(phi1) * math.sin(phi2),
        )
        lon2 = math.degrees(lam2)
        if not -180 <= lon2 <= 180 or abs(math.degrees(phi2)) >= 90:
            raise CapError(
                f"circle at {lat},{lon} with radius {radius_m / 1000:g} km crosses the antimeridian"
                " or a pole; describe the area with polygons instead"
            )
        ring.append([round(lon2, 7), round(math.degrees(phi2), 7)])
    ring.append(ring[0])
    return ring


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


def routing_geometry(
    polygons: list[list[list[list[float]]]], points: list[list[float]]
) -> dict[str, Any] | None:
    """One GeoJSON geometry for routing: Polygon / MultiPolygon, or Point / MultiPoint.

    Points next to polygons (radius-0 circles in an alert that also has shapes) become
    1-metre circles so the result stays one MultiPolygon.
    """
    if not polygons:
        if not points:
            return None
        if len(points) == 1:
            return {"type": "Point", "coordinates": points[0]}
        return {"type": "MultiPoint", "coordinates": points}
    polygons = polygons + [[circle_polygon(lon, lat, 1.0)] for lon, lat in points]
    if len(polygons) == 1:
        return {"type": "Polygon", "coordinates": polygons[0]}
    return {"type": "MultiPolygon", "coordinates": polygons}


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


def _message_priority(header: dict[str, Any]) -> Priority:
    """An alert without info: a Cancel must reach recipients quickly, the rest is routine."""
    if header["status"] in ("Test", "System", "Draft"):
        return Priority.BULK
    return Priority.HIGH if header["msg_type"] == "Cancel" else Priority.ROUTINE


def cap_event_id(sender: str, identifier: str, info_index: int) -> str:
    """Deterministic event id for one info block of one alert (uuid5, hex)."""
    return uuid.uuid5(CAP_ID_NAMESPACE, f"{sender}\n{identifier}\n{info_index}").hex


def events_from_cap(xml: bytes | str, department: str | None = None) -> list[Event]:
    """The events one CAP alert becomes (one per ``<info>``; one ``cap.message`` if none).

    `department` is the publishing department (sets ``source`` and ``department``); without it
    the source is ``/cap/<sender>``. Raises `CapError` for anything that is not valid CAP.
    """
    root = parse_alert(xml)
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
    return events


# --- CAP out ---------------------------------------------------------------------------------

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


def geometry_to_cap(location: dict[str, Any]) -> dict[str, list[str]]:
    """CAP polygons/circles for a location: points -> radius-0 circles, polygons -> their
    exterior rings, lines -> their bounding box (CAP has no lines; holes are not expressible)."""

    def pair(pos: list[float]) -> str:
        return f"{pos[1]:.7g},{pos[0]:.7g}"

    def ring_text(ring: list[list[float]]) -> str:
        return " ".join(pair(p) for p in ring)

    if "lat" in location:
        return {"polygons": [], "circles": [f"{location['lat']:.7g},{location['lon']:.7g} 0"]}
    kind, coords = location["type"], location["coordinates"]
    if kind == "Point":
        return {"polygons": [], "circles": [pair(coords) + " 0"]}
    if kind == "MultiPoint":
        return {"polygons": [], "circles": [pair(p) + " 0" for p in coords]}
    if kind == "Polygon":
        return {"polygons": [ring_text(coords[0])], "circles": []}
    if kind == "MultiPolygon":
        return {"polygons": [ring_text(poly[0]) for poly in coords], "circles": []}
    positions = coords if kind == "LineString" else [p for line in coords for p in line]
    lons, lats = [p[0] for p in positions], [p[1] for p in positions]
    w, e, s, n = min(lons), max(lons), min(lats), max(lats)
    box = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return {"polygons": [ring_text(box)], "circles": []}
