"""The example city's retention schedule (`EXAMPLE_RETENTION`), for tests and the archive bench."""

from __future__ import annotations

from typing import Any

# Realistic defaults for the example city (US municipal general records schedules: raw
# surveillance-like telemetry 30 days; dispatch records 3 years; traffic studies 10 years;
# utility billing 7 years after the fiscal year; emergency incident records permanent).
EXAMPLE_RETENTION: dict[str, Any] = {
    "series": [
        {
            "id": "telemetry-ephemeral",
            "types": ["iot.*"],
            "description": "device heartbeats: only useful while fresh",
            "hot": "6h",
            "window": "1h",
            "end_of_hot": "drop",
            "retain": "6h",
            "authority": "transitory records (no retention requirement)",
        },
        {
            "id": "vehicle-telemetry",
            "types": ["transit.vehicle_position"],
            "description": "raw vehicle positions: like CCTV footage, kept 30 days",
            "hot": "1d",
            "end_of_hot": "archive",
            "retain": "30d",
            "disposition": "destroy",
            "authority": "GS 2016-010: surveillance recordings, 30 days",
        },
        {
            "id": "air-quality-counts",
            "types": ["environment.*"],
            "description": "hourly counts per H3 cell for environmental studies",
            "hot": "2d",
            "end_of_hot": "aggregate",
            "aggregate_resolution": 8,
            "storage": [
                {"after": "0d", "class": "STANDARD"},
                {"after": "90d", "class": "GLACIER_IR"},
            ],
            "retain": "10y",
            "authority": "environmental monitoring data, 10 years",
        },
        {
            "id": "traffic-studies",
            "types": ["traffic.*"],
            "description": "incidents feed traffic safety studies",
            "hot": "2d",
            "end_of_hot": "archive",
            "storage": [
                {"after": "0d", "class": "STANDARD"},
                {"after": "30d", "class": "STANDARD_IA"},
                {"after": "365d", "class": "GLACIER_IR"},
            ],
            "retain": "10y",
            "disposition": "anonymise",
            "anonymise_fields": ["plate"],
            "personal_data": True,
            "authority": "GS 2012-020: traffic studies, 10 years",
        },
        {
            "id": "utility-billing",
            "types": ["utility.*"],
            "description": "meter events back billing adjustments",
            "hot": "1d",
            "end_of_hot": "record",
            "storage": [
                {"after": "0d", "class": "STANDARD"},
                {"after": "30d", "class": "STANDARD_IA"},
                {"after": "180d", "class": "GLACIER_IR"},
            ],
            "retain": "7y",
            "trigger": "end_of_year",
            "authority": "GS 2011-178: utility billing, 6 years after end of fiscal year (+1)",
        },
        {
            "id": "dispatch-records",
            "types": ["safety.*"],
            "description": "CAD dispatch records; caller phone numbers are personal data",
            "hot": "1d",
            "end_of_hot": "record",
            "storage": [
                {"after": "0d", "class": "STANDARD"},
                {"after": "30d", "class": "STANDARD_IA"},
                {"after": "90d", "class": "GLACIER_IR"},
            ],
            "retain": "3y",
            "personal_data": True,
            "authority": "LE 2010-003: dispatch records, 3 years",
        },
        {
            "id": "emergency-incidents",
            "types": ["health.*"],
            "description": "emergency incident records: permanent (archival)",
            "hot": "1d",
            "end_of_hot": "record",
            "storage": [
                {"after": "0d", "class": "STANDARD"},
                {"after": "30d", "class": "STANDARD_IA"},
                {"after": "90d", "class": "GLACIER_IR"},
            ],
            "retain": "permanent",
            "personal_data": True,
            "authority": "EM 2009-001: major incident records, permanent (archival)",
        },
    ]
}
