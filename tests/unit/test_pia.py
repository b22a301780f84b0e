"""Privacy impact assessments: life cycle, fingerprints, automatic risk checks."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from city.privacy import PrivacyPolicy, parse_privacy
from city.privacy.pia import (
    Pia,
    PiaError,
    Risk,
    approve,
    effective_status,
    fingerprint,
    risks,
    submit,
    unlisted_fields,
)
from tests.privacy_city import PRIVACY, keyring

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
SUBS = {
    "police": {"investigation"},
    "transport": {"operations"},
    "transit": {"trip-alerts"},
    "parks": {"events"},
}
FIELDS = {
    "plate": "direct",
    "description": "sensitive",
    "road": "quasi",
    "kind": "public",
    "severity": "public",
    "lanes_blocked": "public",
}


def policy(raw: dict | None = None) -> PrivacyPolicy:
    return PrivacyPolicy(parse_privacy(raw or PRIVACY), keyring())  # type: ignore[arg-type]


def camera_pia(**changes: object) -> Pia:
    base = {
        "department": "cameras",
        "type": "traffic.incident",
        "description": "Traffic cameras report incidents with the plate involved",
        "purposes": ["investigation", "operations"],
        "fields": dict(FIELDS),
        "recipients": ["police", "transport", "transit", "parks"],
        "lawful_basis": "public_task",
        "risks": ["plates identify owners"],
        "mitigations": ["pseudonyms for operations"],
    }
    return Pia.model_validate({**base, **changes})


def test_a_sound_design_has_no_high_risk() -> None:
    found = risks(camera_pia(), policy(), SUBS)
    assert [r for r in found if r.severity == "high"] == []


def test_direct_identifier_beyond_need_is_flagged() -> None:
    raw = copy.deepcopy(PRIVACY)
    raw["types"]["traffic.incident"]["views"][1]["transforms"]["plate"] = "keep"
    raw["types"]["traffic.incident"]["views"][0]["transforms"]["description"] = "keep"
    raw["types"]["traffic.incident"]["views"].insert(
        0, {"recipients": ["parks"], "transforms": {"description": "keep"}}
    )
    codes = {(r.code, r.severity) for r in risks(camera_pia(), policy(raw), SUBS)}
    assert ("identifier-beyond-need", "high") in codes  # transport keeps the plate in clear
    assert ("sensitive-beyond-need", "medium") in codes  # parks keeps the description


def test_mismatches_between_pia_and_config_are_flagged() -> None:
    fields = {**FIELDS, "plate": "quasi", "colour": "public"}
    del fields["lanes_blocked"]
    pia = camera_pia(fields=fields, recipients=["police"], mitigations=[])
    codes = {r.code for r in risks(pia, policy(), SUBS)}
    assert {
        "class-mismatch",
        "field-not-declared",
        "field-not-assessed",
        "unlisted-recipient",
        "no-mitigation",
    } <= codes
    raw = copy.deepcopy(PRIVACY)
    tp = raw["types"]["traffic.incident"]
    tp["lawful_basis"] = "consent"
    tp["quasi_identifiers"] = ["road", "kind", "severity", "location"]
    codes = {r.code for r in risks(camera_pia(), policy(raw), SUBS)}
    assert {"basis-mismatch", "many-quasi-identifiers"} <= codes


def test_personal_data_of_an_undeclared_type_is_high_risk() -> None:
    pia = camera_pia(type="safety.dispatch", fields={"caller_phone": "direct"})
    assert [r.code for r in risks(pia, policy(), {})] == ["undeclared-personal-data"]
    assert risks(camera_pia(type="x.y", fields={"n": "public"}), None, {}) == []


def test_life_cycle_and_fingerprint() -> None:
    current = fingerprint(policy().config, "traffic.incident", SUBS)
    pia = submit(None, camera_pia())
    assert pia.status == "submitted" and pia.revision == 1
    assert effective_status(None, current, NOW.timestamp()) == "missing"
    assert effective_status(pia, current, NOW.timestamp()) == "submitted"
    high = [Risk("identifier-beyond-need", "high", "x")]
    with pytest.raises(PiaError, match="explicitly accepted"):
        approve(pia, "dpo", NOW + timedelta(days=90), current, high, now=NOW)
    with pytest.raises(PiaError, match="future"):
        approve(pia, "dpo", NOW, current, [], now=NOW)
    with pytest.raises(PiaError, match="at most 365"):
        approve(pia, "dpo", NOW + timedelta(days=400), current, [], now=NOW)
    ok = approve(
        pia, "dpo", NOW + timedelta(days=90), current, high, ["identifier-beyond-need"], now=NOW
    )
    assert ok.accepted_risks == ["identifier-beyond-need"] and ok.approved_by == "dpo"
    assert effective_status(ok, current, NOW.timestamp()) == "approved"
    assert effective_status(ok, current, (NOW + timedelta(days=91)).timestamp()) == "expired"
    with pytest.raises(PiaError, match="cannot be approved"):
        approve(ok, "dpo", NOW + timedelta(days=90), current, [], now=NOW)
    # Any change to the integration (here: a new recipient) makes the PIA a draft again.
    changed = fingerprint(policy().config, "traffic.incident", {**SUBS, "fire": {"ops"}})
    assert changed != current and effective_status(ok, changed, NOW.timestamp()) == "draft"
    raw = copy.deepcopy(PRIVACY)
    raw["types"]["traffic.incident"]["fields"]["road"] = "public"
    assert fingerprint(policy(raw).config, "traffic.incident", SUBS) != current
    # Resubmitting resets the approval.
    again = submit(ok, camera_pia(description="now with speed"))
    assert again.status == "submitted" and again.approved_by is None and again.revision == 2


def test_times_need_a_timezone_and_unlisted_fields() -> None:
    with pytest.raises(ValueError, match="timezone"):
        camera_pia(review_date=datetime(2027, 1, 1))
    assert camera_pia().integration == "cameras/traffic.incident"
    assert unlisted_fields(camera_pia(), {"plate": 1, "speed": 2}) == ["speed"]
    assert unlisted_fields(camera_pia(), None) == []
    assert str(Risk("c", "high", "m")) == "[high] c: m"
