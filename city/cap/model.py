"""The CAP vocabulary both directions share: the namespaces, `CapError`, the categories and
the urgency/severity/certainty values, and `CapPayload` (the ``data`` of every ``cap.*`` event),
registered per event type in `CAP_TYPES`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from city.events import Priority

CAP12_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CAP11_NS = "urn:oasis:names:tc:emergency:cap:1.1"

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
    ``invalid_cap`` (well-formed XML that is not valid CAP 1.2: namespace, schema, geometry),
    ``signature_invalid`` / ``signature_unverified`` / ``signature_absent`` (the city requires
    a valid signature, ``cap.require_signature``, and this alert's is not).
    """

    def __init__(self, message: str, reason: str = "invalid_cap"):
        self.reason = reason
        super().__init__(message)


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


def _q(name: str) -> str:
    return f"{{{CAP12_NS}}}{name}"
