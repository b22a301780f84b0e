"""The retention schedule a records officer writes: parsing, clear errors, and its decisions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from city.config import ConfigError
from city.retention import (
    EXAMPLE_RETENTION,
    Duration,
    Hold,
    blocking_holds,
    parse_retention,
)


def series(**fields):
    base = {
        "id": "s",
        "types": ["traffic.incident"],
        "hot": "1d",
        "end_of_hot": "archive",
        "retain": "1y",
    }
    base.update(fields)
    return base


def errors_for(**fields) -> str:
    with pytest.raises(ConfigError) as info:
        parse_retention({"series": [series(**fields)]}, "city.yaml")
    return str(info.value)


def test_example_schedule_has_realistic_municipal_defaults():
    schedule = parse_retention(EXAMPLE_RETENTION)
    by_type = {
        t: schedule.series_for(t)
        for t in (
            "transit.vehicle_position",
            "safety.dispatch",
            "traffic.incident",
            "utility.meter_alarm",
            "health.emergency",
            "environment.air_quality",
            "iot.heartbeat",
        )
    }
    assert str(by_type["transit.vehicle_position"].retain) == "30d"
    assert str(by_type["safety.dispatch"].retain) == "3y"
    assert str(by_type["traffic.incident"].retain) == "10y"
    assert str(by_type["utility.meter_alarm"].retain) == "7y"
    assert by_type["health.emergency"].permanent
    assert by_type["environment.air_quality"].end_of_hot == "aggregate"
    assert by_type["iot.heartbeat"].end_of_hot == "drop"
    assert by_type["safety.dispatch"].lock_mode == "GOVERNANCE"  # caller phone: erasable
    assert by_type["utility.meter_alarm"].lock_mode == "COMPLIANCE"
    assert by_type["traffic.incident"].lock_mode is None  # archive, not record
    assert schedule.series_for("unknown.type") is None


def test_exact_type_beats_prefix_beats_wildcard():
    schedule = parse_retention(
        {
            "series": [
                series(id="all", types=["*"]),
                series(id="traffic", types=["traffic.*"]),
                series(id="incident", types=["traffic.incident"]),
            ]
        }
    )
    assert schedule.series_for("traffic.incident").id == "incident"
    assert schedule.series_for("traffic.closure").id == "traffic"
    assert schedule.series_for("water.main_break").id == "all"
    assert schedule.get("traffic").id == "traffic"
    with pytest.raises(KeyError):
        schedule.get("nope")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hot": "soon"}, "not a duration"),
        ({"hot": "0h"}, "hot must be longer than zero"),
        ({"window": "7h"}, "window must divide a day"),
        ({"id": "Bad Id"}, "series ids"),
        ({"types": ["Traffic"]}, "neither an event type"),
        ({"storage": [{"after": "1d", "class": "STANDARD"}]}, "storage must start"),
        (
            {"storage": [{"class": "STANDARD"}, {"after": "10d", "class": "STANDARD_IA"}]},
            "no earlier than 30",
        ),
        (
            {
                "storage": [
                    {"class": "STANDARD"},
                    {"after": "40d", "class": "STANDARD_IA"},
                    {"after": "50d", "class": "GLACIER_IR"},
                ]
            },
            "30 days in STANDARD_IA",
        ),
        (
            {
                "storage": [
                    {"class": "STANDARD"},
                    {"after": "90d", "class": "GLACIER_IR"},
                    {"after": "60d", "class": "GLACIER"},
                ]
            },
            "increasing",
        ),
        ({"storage": [{"class": "TAPE"}]}, "storage[0].class"),
        ({"disposition": "transfer"}, "transfer_to"),
        ({"disposition": "anonymise"}, "anonymise_fields"),
        ({"end_of_hot": "drop", "retain": "permanent"}, "'drop' series keep nothing"),
        ({"end_of_hot": "drop", "hot": "2d", "retain": "1d"}, "retain is shorter than hot"),
        ({"end_of_hot": "shred"}, "end_of_hot"),
    ],
)
def test_bad_series_are_reported_with_their_path(fields, message):
    text = errors_for(**fields)
    assert "city.yaml: retention.series[0]" in text
    assert message in text


def test_duplicate_ids_and_non_mapping_are_refused():
    with pytest.raises(ConfigError, match="duplicate series id"):
        parse_retention({"series": [series(), series()]})
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_retention(["not", "a", "mapping"])


def test_durations_parse_and_add_calendar_years():
    assert Duration.parse(30) == Duration(value=30, unit="d")
    assert Duration.parse({"value": 2, "unit": "h"}).seconds == 7200
    assert Duration.parse(Duration.parse("1w")).approx_days == 7
    assert Duration.parse("36h").approx_days == 2
    assert Duration.parse("2y").approx_days == 732
    assert Duration.parse("1y").seconds == 366 * 86400
    leap = datetime(2024, 2, 29, tzinfo=UTC)
    assert Duration.parse("1y").add_to(leap) == datetime(2025, 3, 1, tzinfo=UTC)
    assert Duration.parse("7y").add_to(datetime(2020, 6, 1, tzinfo=UTC)) == datetime(
        2027, 6, 1, tzinfo=UTC
    )
    assert Duration.parse("90m").add_to(leap) == leap + timedelta(minutes=90)


def test_retention_counts_from_the_trigger():
    schedule = parse_retention(EXAMPLE_RETENTION)
    dispatch = schedule.series_for("safety.dispatch")
    assert dispatch.retain_until(date(2026, 3, 10)) == datetime(2029, 3, 11, tzinfo=UTC)
    billing = schedule.series_for("utility.meter_alarm")  # 7 years after the end of the year
    assert billing.retain_until(date(2026, 3, 10)) == datetime(2034, 1, 1, tzinfo=UTC)
    assert schedule.series_for("health.emergency").retain_until(date(2026, 3, 10)) is None


def test_storage_class_by_age_and_hot_cutoff():
    dispatch = parse_retention(EXAMPLE_RETENTION).series_for("safety.dispatch")
    assert dispatch.storage_class_at(timedelta(days=1)) == "STANDARD"
    assert dispatch.storage_class_at(timedelta(days=45)) == "STANDARD_IA"
    assert dispatch.storage_class_at(timedelta(days=400)) == "GLACIER_IR"
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert dispatch.hot_cutoff(now) == now - timedelta(days=1)
    assert dispatch.keeps_events


def test_holds_cover_series_types_and_date_ranges():
    placed = datetime(2026, 1, 1, tzinfo=UTC)
    lawsuit = Hold(
        id="case-42",
        kind="litigation",
        reason="Doe v. City",
        placed_by="legal",
        placed_at=placed,
        series="dispatch-records",
        start=date(2025, 1, 1),
        end=date(2025, 12, 31),
    )
    request = Hold(
        id="pdr-7",
        kind="public_records",
        reason="PRR 2026-7",
        placed_by="clerk",
        placed_at=placed,
        types=["traffic.*"],
    )
    holds = [lawsuit, request]
    assert blocking_holds(holds, "dispatch-records", "safety.dispatch", date(2025, 6, 1)) == [
        lawsuit
    ]
    assert blocking_holds(holds, "dispatch-records", "safety.dispatch", date(2024, 12, 31)) == []
    assert blocking_holds(holds, "dispatch-records", "safety.dispatch", date(2026, 1, 1)) == []
    assert blocking_holds(holds, "traffic-studies", "traffic.incident", date(2020, 1, 1)) == [
        request
    ]
    assert (
        blocking_holds(holds, "traffic-studies", "transit.vehicle_position", date(2020, 1, 1)) == []
    )
    with pytest.raises(ValueError):
        Hold(id="bad id!", kind="litigation", reason="x", placed_by="y", placed_at=placed)
