"""A small city with a privacy section, shared by the privacy tests."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

from city.config import CityConfig, parse_city
from city.privacy import KeyRing

PRIVACY: dict[str, Any] = {
    "keys": {"file": "keys.json"},
    "pseudonym_period": "month",
    "identifying_purposes": ["investigation"],
    "controller": {"name": "City of Testville", "email": "privacy@test.city"},
    "opendata": {"k": 3, "resolution": 9, "min_resolution": 6, "bucket": "1h"},
    "types": {
        "traffic.incident": {
            "fields": {
                "plate": "direct",
                "description": "sensitive",
                "road": "quasi",
                "kind": "public",
                "severity": "public",
                "lanes_blocked": "public",
            },
            "subject": "plate",
            "location": "quasi",
            "time": "quasi",
            "lawful_basis": "public_task",
            "views": [
                {
                    "recipients": ["police"],
                    "purposes": ["investigation"],
                    "transforms": {"plate": "keep", "description": "keep"},
                },
                {
                    "recipients": ["transport"],
                    "transforms": {
                        "plate": "pseudonym",
                        "location": {"h3": 8},
                        "time": {"bucket": "15m"},
                    },
                },
                {
                    "recipients": ["transit"],
                    "purposes": ["trip-alerts"],
                    "lawful_basis": "consent",
                    "without_consent": "withhold",
                    "transforms": {"plate": {"pseudonym": "alerts"}, "road": "keep"},
                },
                {
                    "recipients": ["parks"],
                    "lawful_basis": "consent",
                    "transforms": {"plate": {"mask": 2}, "road": "redact"},
                },
            ],
        },
        "utility.meter_alarm": {
            "fields": {
                "meter_id": "quasi",
                "utility": "public",
                "alarm": "public",
                "reading": "public",
                "account_holder": "direct",
            },
            "lawful_basis": "legal_obligation",
        },
    },
}

SHARING: dict[str, Any] = {
    "policies": [
        {
            "id": "cameras-share",
            "owner": "cameras",
            "recipients": ["police", "transport", "transit", "parks"],
            "types": ["traffic.incident"],
        },
        {"id": "utility-share", "owner": "utilities", "types": ["utility.meter_alarm"]},
    ]
}


def _dept(dept_id: str, purpose: str | None, types: list[str]) -> dict[str, Any]:
    subs = (
        [{"id": f"{dept_id}-sub", "types": types, "scope": "citywide", "purpose": purpose}]
        if purpose
        else []
    )
    return {"id": dept_id, "name": dept_id.title(), "subscriptions": subs}


def city_doc(privacy: dict[str, Any] | None = PRIVACY) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "city": "Testville",
        "layers": {"city": {"path": "city.geojson"}},
        "departments": [
            _dept("cameras", None, []),
            _dept("utilities", None, []),
            _dept("police", "investigation", ["traffic.incident"]),
            _dept("transport", "operations", ["traffic.incident"]),
            _dept("transit", "trip-alerts", ["traffic.incident"]),
            _dept("parks", "events", ["traffic.incident"]),
            _dept("water", "operations", ["utility.meter_alarm"]),
        ],
        "sharing": copy.deepcopy(SHARING),
    }
    if privacy is not None:
        doc["privacy"] = copy.deepcopy(privacy)
    return doc


def city(privacy: dict[str, Any] | None = PRIVACY) -> CityConfig:
    return parse_city(city_doc(privacy))


def keyring(periods: tuple[str, ...] = ("2026-10", "2026-11", "2026-12")) -> KeyRing:
    """Deterministic test keys (tests only; real keys come from `privacy keys --ensure`)."""
    domains = ["police", "transport", "transit", "parks", "water", "alerts"]
    return KeyRing(
        {d: {p: f"{d}:{p}:test-key-material-32b".encode()[:32] for p in periods} for d in domains},
        consent=b"consent-test-key-material-32byte",
    )


def write_keys(path: Path, ring: KeyRing | None = None) -> Path:
    path.write_text(json.dumps((ring or keyring()).to_json()))
    return path


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def incident(
    event_id: str = "e-1",
    plate: str | None = "ABC123",
    time: str = "2026-11-25T10:07:00Z",
    lat: float = 47.6205,
    lon: float = -122.3493,
    dept: str = "cameras",
    **data: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "kind": "collision",
        "severity": 3,
        "road": "Aurora Ave N",
        "description": "driver injured",
        **data,
    }
    if plate is not None:
        payload["plate"] = plate
    return {
        "id": event_id,
        "source": f"/city/{dept}",
        "specversion": "1.0",
        "type": "traffic.incident",
        "time": time,
        "department": dept,
        "priority": "high",
        "location": {"lat": lat, "lon": lon},
        "data": payload,
    }
