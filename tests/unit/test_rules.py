"""Derived events: a health emergency asks transport for a vehicle and police for an escort."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from city.events import Event
from city.rules import MAX_DEPTH, RuleConfig, RuleSet
from city.sharing import Authorizer, PolicySet, compile_subscription, parse_sharing

SHARING: dict[str, Any] = {
    "policies": [
        {
            "id": "dispatch-to-fleet",
            "owner": "health",
            "recipients": ["transportation"],
            "types": ["transport.dispatch"],
            "purposes": ["operations"],
        },
    ],
    "rules": [
        {
            "id": "ambulance-escort",
            "when": {
                "types": ["health.emergency"],
                "filter": {"in": {"data.kind": ["trauma", "mass_casualty"]}},
            },
            "dedupe": "{data.incident_number}",
            "emit": [
                {
                    "type": "transport.dispatch",
                    "department": "health",
                    "data": {
                        "fleet": "nearest",
                        "incident": "$data.incident_number",
                        "patients": "$data.patients",
                        "note": "$$literal",
                        "source": {"id": "$id"},
                        "tags": ["$data.kind", "ems"],
                    },
                    "subject": "dispatch {data.incident_number}",
                },
                {
                    "type": "police.escort",
                    "department": "health",
                    "priority": "emergency",
                    "data": {"incident": "$data.incident_number"},
                },
            ],
        },
        {
            "id": "needs-hospital",
            "when": {"types": ["health.*"]},
            "dedupe": "{data.hospital}",
            "emit": [
                {
                    "type": "health.bed_request",
                    "department": "health",
                    "data": {"hospital": "$data.hospital"},
                }
            ],
        },
    ],
}

EMERGENCY: dict[str, Any] = Event.new(
    "health.emergency",
    "/city/health",
    {"incident_number": "H-77", "kind": "trauma", "patients": 3},
    department="health",
    priority="emergency",
    location={"lat": 47.61, "lon": -122.33},
).to_wire()


def test_health_emergency_derives_dispatch_and_escort() -> None:
    rules = RuleSet(parse_sharing(SHARING).rules)
    result = rules.derive(EMERGENCY)
    dispatch, escort = result.events
    # needs-hospital cannot apply: the source has no hospital; said, not silently dropped.
    assert result.problems == [
        f"rule needs-hospital on event {EMERGENCY['id']}: source event has no 'data.hospital'"
    ]
    assert dispatch["type"] == "transport.dispatch" and escort["type"] == "police.escort"
    assert dispatch["data"] == {
        "fleet": "nearest",
        "incident": "H-77",
        "patients": 3,
        "note": "$literal",
        "source": {"id": EMERGENCY["id"]},
        "tags": ["trauma", "ems"],
    }
    assert dispatch["subject"] == "dispatch H-77"
    for derived in (dispatch, escort):
        assert derived["derivedfrom"] == EMERGENCY["id"]
        assert derived["rule"] == "ambulance-escort" and derived["dedupekey"] == "H-77"
        assert derived["department"] == "health"
        assert derived["location"] == EMERGENCY["location"]
        assert derived["priority"] == "emergency" and derived["ruledepth"] == 1
        Event.model_validate(derived)  # a valid CloudEvent for the pipeline
    assert dispatch["id"] != escort["id"]
    # Reprocessing the same source yields the same ids: ingest dedupe drops the repeat.
    again = rules.derive(dict(EMERGENCY, id="retry-of-same"))
    assert [e["id"] for e in again.events] == [dispatch["id"], escort["id"]]


def test_derived_events_go_through_authorization_like_any_other() -> None:
    sharing = parse_sharing(SHARING)
    dispatch, escort = RuleSet(sharing.rules).derive(EMERGENCY).events
    auth = Authorizer(PolicySet.from_config(sharing))
    dept = type("D", (), {"id": "transportation", "jurisdiction": []})()
    fleet = compile_subscription(
        dept, {"id": "fleet", "types": ["transport.*", "police.*"], "scope": "citywide"}
    )
    assert auth.decide(dispatch, fleet, 0).allow
    assert auth.decide(escort, fleet, 0).reason == "no-permit"


def test_rules_only_fire_on_matching_events() -> None:
    rules = RuleSet(parse_sharing(SHARING).rules)
    cardiac = dict(EMERGENCY, data={**EMERGENCY["data"], "kind": "cardiac", "hospital": "HMC"})
    result = rules.derive(cardiac)
    assert [e["type"] for e in result.events] == ["health.bed_request"] and not result.problems
    assert rules.derive({"type": "traffic.incident", "id": "x"}).events == []
    assert rules.for_type("traffic.incident") == ()
    plain = {k: v for k, v in cardiac.items() if k not in ("location", "priority")}
    bed = rules.derive(plain).events[0]
    assert "priority" not in bed and "location" not in bed


def test_rule_chains_stop_at_the_depth_limit() -> None:
    rules = RuleSet(parse_sharing(SHARING).rules)
    deep = dict(EMERGENCY, ruledepth=MAX_DEPTH)
    result = rules.derive(deep)
    assert result.events == [] and "rule depth 3 reached" in result.problems[0]


def test_dedupe_template_missing_value_is_reported() -> None:
    rule = RuleConfig.model_validate(
        {
            "id": "r",
            "when": {"types": ["health.*"]},
            "dedupe": "{data.nothing}",
            "emit": [{"type": "a.b", "department": "health"}],
        }
    )
    result = RuleSet([rule]).derive(EMERGENCY)
    assert result.events == [] and "no 'data.nothing'" in result.problems[0]
    missing_path = RuleSet([rule.model_copy(update={"dedupe": "{id}"})])
    emitted = missing_path.derive(dict(EMERGENCY, data="not-a-dict"))
    assert emitted.events[0]["data"] == {}


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValidationError, match="dotted lower-case"):
        RuleConfig.model_validate(
            {"id": "r", "when": {"types": ["a.*"]}, "emit": [{"type": "Bad", "department": "x"}]}
        )
    with pytest.raises(ValidationError):
        RuleConfig.model_validate({"id": "r", "when": {"types": ["a.*"]}, "emit": []})


def test_data_reference_missing_in_source_is_reported() -> None:
    rule = RuleConfig.model_validate(
        {
            "id": "r",
            "when": {"types": ["health.*"]},
            "emit": [{"type": "a.b", "department": "health", "data": {"x": "$data.kind.deeper"}}],
        }
    )
    result = RuleSet([rule]).derive(EMERGENCY)
    assert result.events == [] and result.problems == [
        f"rule r on event {EMERGENCY['id']}: source event has no 'data.kind.deeper'"
    ]
