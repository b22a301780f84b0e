"""Payload schemas per event type: each type's `data` is validated by its own model.

The built-in types cover the city's common integrations (a normaliser per service); a city
config can register more (`event_types:` in the YAML), each with a field list that becomes a
pydantic model here, compiled once. Unknown fields are refused so that a producer cannot slip
undeclared (possibly personal) data through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from city.events import Priority


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrafficIncident(Payload):
    kind: Literal["collision", "congestion", "closure", "hazard", "signal_failure", "other"]
    severity: int = Field(ge=1, le=5)
    lanes_blocked: int = Field(default=0, ge=0, le=20)
    road: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    plate: str | None = Field(default=None, max_length=16)


class VehiclePosition(Payload):
    vehicle_id: str = Field(min_length=1, max_length=64)
    route: str | None = Field(default=None, max_length=32)
    speed_kmh: float = Field(ge=0, le=300, allow_inf_nan=False)
    heading: float | None = Field(default=None, ge=0, le=360, allow_inf_nan=False)
    occupancy: int | None = Field(default=None, ge=0)


class MeterAlarm(Payload):
    meter_id: str = Field(min_length=1, max_length=64)
    utility: Literal["water", "power", "gas", "steam"]
    alarm: Literal["leak", "outage", "tamper", "pressure_drop", "overvoltage", "overflow"]
    reading: float | None = Field(default=None, allow_inf_nan=False)
    account_holder: str | None = Field(default=None, max_length=200)


class AirQuality(Payload):
    sensor_id: str = Field(min_length=1, max_length=64)
    pm25: float = Field(ge=0, le=2000, allow_inf_nan=False)
    pm10: float | None = Field(default=None, ge=0, le=5000, allow_inf_nan=False)
    o3_ppb: float | None = Field(default=None, ge=0, le=1000, allow_inf_nan=False)
    aqi: int = Field(ge=0, le=999)


class Dispatch(Payload):
    incident_number: str = Field(min_length=1, max_length=64)
    nature: str = Field(min_length=1, max_length=200)
    units: list[str] = Field(default_factory=list, max_length=50)
    address: str | None = Field(default=None, max_length=300)
    caller_phone: str | None = Field(default=None, max_length=32)


class HealthEmergency(Payload):
    incident_number: str = Field(min_length=1, max_length=64)
    kind: Literal["cardiac", "trauma", "overdose", "respiratory", "mass_casualty", "other"]
    patients: int = Field(default=1, ge=0, le=10_000)
    hospital: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=2000)


# type -> (payload model, default priority)
BUILTIN_TYPES: dict[str, tuple[type[BaseModel], Priority]] = {
    "traffic.incident": (TrafficIncident, Priority.HIGH),
    "transit.vehicle_position": (VehiclePosition, Priority.BULK),
    "utility.meter_alarm": (MeterAlarm, Priority.HIGH),
    "environment.air_quality": (AirQuality, Priority.ROUTINE),
    "safety.dispatch": (Dispatch, Priority.HIGH),
    "health.emergency": (HealthEmergency, Priority.EMERGENCY),
}

FIELD_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list[Any],
    "object": dict[str, Any],
}


def model_from_fields(type_name: str, fields: Mapping[str, str]) -> type[BaseModel]:
    """Compile a config field list (`name: str`, `name: float?` for optional) to a model."""
    definitions: dict[str, Any] = {}
    for name, spec in fields.items():
        optional = spec.endswith("?")
        base = spec[:-1] if optional else spec
        if base not in FIELD_TYPES:
            raise ValueError(
                f"field {name!r}: unknown type {spec!r} (use one of {', '.join(FIELD_TYPES)},"
                " with '?' for optional)"
            )
        py_type = FIELD_TYPES[base]
        definitions[name] = (py_type | None, None) if optional else (py_type, ...)
    model_name = "".join(part.title() for part in type_name.replace("_", ".").split("."))
    return create_model(model_name, __base__=Payload, **definitions)
