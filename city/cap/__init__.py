"""OASIS Common Alerting Protocol (CAP 1.2) alerts in and out: `model` (namespaces,
`CapError`, the `CapPayload` registered per ``cap.*`` type in `CAP_TYPES`), `schema` (the one
place a document is accepted: size limit, safe parse with defusedxml, work bounds, the CAP 1.2
schema `city/data/cap12.xsd`), `geometry` (CAP polygons and circles <-> GeoJSON), `priority`
(urgency x severity x certainty -> priority, `alert_priority`), `parse` (XML -> events,
`events_from_cap`) and `render` (events -> CAP XML, `event_to_cap`). Part of the pure core: it
may import `city.events` and third-party libraries (defusedxml, xmlschema, pydantic), never
queues/, jobs/ or workers/; its modules import their siblings directly, never this package.
"""

from city.cap.geometry import (
    CIRCLE_SEGMENTS,
    EARTH_RADIUS_M,
    circle_polygon,
    geometry_to_cap,
    parse_circle,
    parse_polygon,
    routing_geometry,
)
from city.cap.model import (
    CAP11_NS,
    CAP12_NS,
    CAP_TYPES,
    CATEGORIES,
    MESSAGE_TYPE,
    CapArea,
    CapError,
    CapPayload,
    CapResource,
    Certainty,
    NameValue,
    Severity,
    Urgency,
)
from city.cap.parse import CAP_ID_NAMESPACE, cap_event_id, events_from_cap
from city.cap.priority import (
    CERTAINTY_SCORE,
    SEVERITY_SCORE,
    URGENCY_SCORE,
    alert_priority,
    cap_priority,
)
from city.cap.render import (
    CATEGORY_BY_DOMAIN,
    PUBLIC_TEXT_FIELDS,
    USC_BY_PRIORITY,
    cap_time,
    event_to_cap,
)
from city.cap.schema import (
    CIRCLE_VERTICES,
    MAX_CAP_BYTES,
    MAX_CAP_ELEMENTS,
    MAX_CAP_INFOS,
    MAX_CAP_VERTICES,
    SCHEMA_PATH,
    parse_alert,
)

__all__ = [
    "CAP11_NS",
    "CAP12_NS",
    "CAP_ID_NAMESPACE",
    "CAP_TYPES",
    "CATEGORIES",
    "CATEGORY_BY_DOMAIN",
    "CERTAINTY_SCORE",
    "CIRCLE_SEGMENTS",
    "CIRCLE_VERTICES",
    "EARTH_RADIUS_M",
    "MAX_CAP_BYTES",
    "MAX_CAP_ELEMENTS",
    "MAX_CAP_INFOS",
    "MAX_CAP_VERTICES",
    "MESSAGE_TYPE",
    "PUBLIC_TEXT_FIELDS",
    "SCHEMA_PATH",
    "SEVERITY_SCORE",
    "URGENCY_SCORE",
    "USC_BY_PRIORITY",
    "CapArea",
    "CapError",
    "CapPayload",
    "CapResource",
    "Certainty",
    "NameValue",
    "Severity",
    "Urgency",
    "alert_priority",
    "cap_event_id",
    "cap_priority",
    "cap_time",
    "circle_polygon",
    "event_to_cap",
    "events_from_cap",
    "geometry_to_cap",
    "parse_alert",
    "parse_circle",
    "parse_polygon",
    "routing_geometry",
]
