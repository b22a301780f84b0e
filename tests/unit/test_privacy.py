"""Field classes, the `privacy:` config, compiled views, keyed pseudonyms and keys."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json

import h3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from city.errors import ConfigError
from city.privacy import (
    REDACTED,
    KeyRing,
    KeysConfig,
    PrivacyPolicy,
    Signer,
    bucket_time,
    consent_applies,
    consent_id,
    erasure_decision,
    generalise_location,
    normalise_subject,
    parse_duration,
    parse_privacy,
    parse_transform,
    period_of,
    pseudonym,
)
from city.sharing import Decision
from tests.privacy_city import PRIVACY, city, incident, keyring, write_keys

DEPTS = ["cameras", "utilities", "police", "transport", "transit", "parks", "water"]


def allow(purpose: str, **kw: object) -> Decision:
    return Decision(allow=True, reason="policy", purpose=purpose, **kw)  # type: ignore[arg-type]


@pytest.fixture
def policy() -> PrivacyPolicy:
    return PrivacyPolicy(parse_privacy(PRIVACY, "c.yaml", DEPTS), keyring())  # type: ignore[arg-type]


def test_no_privacy_section_means_none() -> None:
    assert parse_privacy(None) is None


def problems(raw: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as err:
        parse_privacy(raw, "c.yaml", DEPTS)
    return err.value.problems


def test_config_errors_name_the_path() -> None:
    assert problems([1]) == [("privacy", "must be a mapping (types:, keys:, ...)")]
    bad = copy.deepcopy(PRIVACY)
    tp = bad["types"]["traffic.incident"]
    tp["fields"]["plate"] = "secret"
    found = problems(bad)
    assert found[0][0] == "privacy.types.traffic.incident.fields.plate"
    bad = copy.deepcopy(PRIVACY)
    tp = bad["types"]["traffic.incident"]
    tp["subject"] = "owner"
    tp["views"][0]["recipients"] = ["nobody"]
    tp["views"][0]["transforms"] = {
        "plate": "shred",
        "colour": "keep",
        "location": {"bucket": "1h"},
        "time": {"h3": 7},
        "road": {"h3": 7},
        "kind": {"mask": 99},
    }
    bad["types"]["Bad Type"] = {"fields": {"x": "public"}, "quasi_identifiers": ["y"]}
    bad["types"]["health.emergency"] = {"fields": {"x": "public"}, "lawful_basis": "consent"}
    bad["class_defaults"] = {"direct": {"h3": 3}, "quasi": "nope", "secret": "drop"}
    bad["opendata"] = {"resolution": 6, "min_resolution": 8}
    found = dict(problems(bad))
    v = "privacy.types.traffic.incident.views[0]"
    assert found[f"{v}.recipients"] == "no department 'nobody'"
    assert found[f"{v}.transforms.plate"] == "unknown transform 'shred'"
    assert found[f"{v}.transforms.colour"].startswith("no field 'colour'")
    assert "location takes" in found[f"{v}.transforms.location"]
    assert "time takes" in found[f"{v}.transforms.time"]
    assert "location/time only" in found[f"{v}.transforms.road"]
    assert "bad argument" in found[f"{v}.transforms.kind"]
    assert "not one of the fields" in found["privacy.types.traffic.incident.subject"]
    assert "dotted lower-case" in found["privacy.types.Bad Type"]
    assert "unknown field 'y'" in found["privacy.types.Bad Type.quasi_identifiers"]
    assert "needs a `subject`" in found["privacy.types.health.emergency.subject"]
    assert "no h3/bucket" in found["privacy.class_defaults.direct"]
    assert "unknown transform" in found["privacy.class_defaults.quasi"]
    assert found["privacy.class_defaults.secret"] == "no field class 'secret'"
    assert "must not exceed" in found["privacy.opendata.min_resolution"]
    assert "15m" in dict(problems({"opendata": {"bucket": "soon"}}))["privacy.opendata.bucket"]


def test_transform_specs() -> None:
    assert parse_transform("mask") == ("mask", 2)
    assert parse_transform({"mask": 0}) == ("mask", 0)
    assert parse_transform("pseudonym") == ("pseudonym", None)
    assert parse_transform({"pseudonym": "shared"}) == ("pseudonym", "shared")
    assert parse_transform({"bucket": "15m"}) == ("bucket", 900)
    for bad in (3, {"mask": True}, {"a": 1, "b": 2}, {"pseudonym": "Bad Domain"}):
        with pytest.raises(ValueError):
            parse_transform(bad)
    assert parse_duration("2h") == 7200
    with pytest.raises(ValueError):
        parse_duration("0m")


def test_each_recipient_gets_its_own_view(policy: PrivacyPolicy) -> None:
    event = incident()
    police, note = policy.view(event, "police", allow("investigation"))
    assert police is not None
    assert police["data"]["plate"] == "ABC123" and police["data"]["description"] == "driver injured"
    assert police["location"] == event["location"] and note.keys == ()

    transport, note = policy.view(event, "transport", allow("operations"))
    assert transport is not None
    assert "description" not in transport["data"]  # sensitive: dropped by default
    assert transport["data"]["plate"] != "ABC123" and len(transport["data"]["plate"]) == 32
    assert transport["h3cell"] == h3.latlng_to_cell(47.6205, -122.3493, 8)
    assert transport["time"] == "2026-11-25T10:00:00Z"
    assert transport["pseudokey"] == note.keys[0] and note.keys[0].startswith("transport/2026-11/")
    assert transport["privacy"] == note.transform
    # The input event is never modified.
    assert event["data"]["plate"] == "ABC123" and "h3cell" not in event

    parks, note = policy.view(event, "parks", allow("events"), consent="given")
    assert parks is not None and parks["data"]["plate"] == "****23"
    assert parks["data"]["road"] == REDACTED and note.action == "view"


def test_unrelated_recipient_falls_back_to_class_defaults(policy: PrivacyPolicy) -> None:
    out, note = policy.view(incident(), "water", allow("operations"))
    assert out is not None and "plate" not in out["data"] and "description" not in out["data"]
    assert out["data"]["road"] == "Aurora Ave N" and note.transform.startswith("traffic.incident#d")
    # Undeclared payload fields are dropped, never passed on.
    out, _ = policy.view(incident(colour="red"), "water", allow("operations"))
    assert out is not None and "colour" not in out["data"]


def test_types_without_declaration_pass_unchanged(policy: PrivacyPolicy) -> None:
    event = {**incident(), "type": "environment.air_quality", "data": {"pm25": 3.0}}
    out, note = policy.view(event, "police", allow("investigation"))
    assert out == {**event, "purpose": "investigation"} and note.transform == "none"


def test_the_producer_gets_its_own_events_unchanged(policy: PrivacyPolicy) -> None:
    decision = Decision(allow=True, reason="own-data", purpose="operations")
    out, note = policy.view(incident(), "cameras", decision)
    assert out == {**incident(), "purpose": "operations"} and note.transform == "own-data"


def test_privacy_never_readds_what_the_policy_removed(policy: PrivacyPolicy) -> None:
    decision = allow("investigation", fields=frozenset({"kind", "severity"}))
    out, _ = policy.view(incident(), "police", decision)
    assert out is not None and set(out["data"]) == {"kind", "severity"}


def test_each_entitlement_gets_its_own_view_whatever_the_decision_object(
    policy: PrivacyPolicy,
) -> None:
    # Views are built once per entitlement: the same purpose with other fields, another
    # recipient or break-glass is another view; an equal decision object is the same one.
    narrow = allow("investigation", fields=frozenset({"kind", "plate"}))
    police = {dept: policy.view(incident(), dept, narrow)[0] for dept in ("police", "water")}
    wide, _ = policy.view(incident(), "police", allow("investigation"))
    again, _ = policy.view(incident(), "police", copy.copy(narrow))
    assert police["police"] is not None and police["water"] is not None and wide is not None
    assert set(police["police"]["data"]) == {"kind", "plate"}
    assert set(police["water"]["data"]) == {"kind"}  # water: class defaults drop the plate
    assert set(wide["data"]) == {"kind", "plate", "description", "road", "severity"}
    assert again == police["police"]
    urgent, _ = policy.view(incident(), "police", allow("investigation", break_glass=True))
    assert urgent is not None and urgent["breakglass"] is True and "breakglass" not in wide


def test_class_defaults_and_location_drop() -> None:
    raw = copy.deepcopy(PRIVACY)
    raw["class_defaults"] = {"direct": "redact", "sensitive": {"mask": 0}}
    raw["types"]["traffic.incident"]["location"] = "direct"
    raw["types"]["traffic.incident"]["views"].append(
        {"recipients": ["water"], "transforms": {"location": {"h3": 7}}}
    )
    policy = PrivacyPolicy(parse_privacy(raw), keyring())  # type: ignore[arg-type]
    out, _ = policy.view(incident(), "police", allow("audit"))
    assert out is not None and "location" not in out and out["data"]["plate"] == REDACTED
    assert out["data"]["description"] == "*" * len("driver injured")
    # A finer producer-given h3cell is coarsened; an event with no place gets no cell.
    event = {**incident(), "h3cell": h3.latlng_to_cell(47.6, -122.3, 10)}
    out, _ = policy.view(event, "water", allow("operations"))
    assert out is not None and out["h3cell"] == h3.latlng_to_cell(47.6, -122.3, 7)
    event = {k: v for k, v in incident().items() if k != "location"}
    out, _ = policy.view(event, "water", allow("operations"))
    assert out is not None and "h3cell" not in out and "location" not in out


def test_location_forms() -> None:
    point = {"location": {"type": "Point", "coordinates": [-122.3, 47.6]}}
    assert generalise_location(point, 6) == h3.latlng_to_cell(47.6, -122.3, 6)
    line = {"location": {"type": "LineString", "coordinates": [[-122.3, 47.6], [-122.3, 47.7]]}}
    assert generalise_location(line, 6) == h3.latlng_to_cell(47.65, -122.3, 6)
    same = {"h3cell": h3.latlng_to_cell(47.6, -122.3, 6)}
    assert generalise_location(same, 6) == same["h3cell"]
    coarse = {"h3cell": h3.latlng_to_cell(47.6, -122.3, 4), "location": "x"}
    assert generalise_location(coarse, 6) is None  # cannot refine; no usable location


def test_pseudonyms_are_keyed_stable_per_period_and_differ_across_periods_and_domains(
    policy: PrivacyPolicy,
) -> None:
    def plate_for(dept: str, time: str, plate: str = "ABC123") -> str:
        out, _ = policy.view(incident(time=time, plate=plate), dept, allow("operations"))
        assert out is not None
        return out["data"]["plate"]

    nov_a = plate_for("transport", "2026-11-02T08:00:00Z")
    nov_b = plate_for("transport", "2026-11-29T23:00:00Z")
    dec = plate_for("transport", "2026-12-01T00:00:00Z")
    assert nov_a == nov_b  # stable within the period: the department can join its data
    assert dec != nov_a  # a new period, a new key
    assert plate_for("transport", "2026-11-02T08:00:00Z", "XYZ999") != nov_a
    other, _ = policy.view(incident(), "transit", allow("trip-alerts"), consent="given")
    assert other is not None and other["data"]["plate"] != nov_a  # another domain
    # Not a plain hash: knowing the value is not enough to recompute it.
    assert nov_a not in {
        hashlib.sha256(b"ABC123").hexdigest()[:32],
        hashlib.md5(b"ABC123").hexdigest(),
    }
    key = policy.keys.key("transport", "2026-11")
    assert nov_a == pseudonym(key, "ABC123")


def test_deleting_a_period_key_severs_the_link(policy: PrivacyPolicy) -> None:
    assert policy.keys.key_id("transport", "2026-10").startswith("transport/2026-10/")
    assert policy.keys.drop_period("2026-10") == 6
    out, note = policy.view(incident(time="2026-10-05T00:00:00Z"), "transport", allow("ops"))
    assert out is not None and "plate" not in out["data"] and note.keys == ()
    assert "pseudokey" not in out


def test_keyring_files(tmp_path, monkeypatch) -> None:
    path = write_keys(tmp_path / "keys.json")
    ring = KeyRing.load(KeysConfig(file="keys.json"), tmp_path)
    assert ring.key("police", "2026-11") == keyring().key("police", "2026-11")
    monkeypatch.setenv("MY_KEYS", str(path))
    assert KeyRing.load(KeysConfig(env="MY_KEYS")).consent == keyring().consent
    monkeypatch.delenv("MY_KEYS")
    assert KeyRing.load(KeysConfig(env="MY_KEYS")).domains == {}
    with pytest.raises(ValueError, match="cannot read"):
        KeyRing.load(KeysConfig(file=str(tmp_path / "missing.json")))
    for doc in ([], {"domains": {"d": {"p": "not base64!"}}}, {"consent": "c2hvcnQ="}):
        with pytest.raises(ValueError):
            KeyRing.from_json(doc)  # type: ignore[arg-type]
    ring = KeyRing({})
    created = ring.ensure(["police"], ["2026-11"])
    assert created[0] == "consent" and created[1].startswith("police/2026-11/")
    assert ring.ensure(["police"], ["2026-11"]) == []
    again = KeyRing.from_json(json.loads(json.dumps(ring.to_json())))
    assert again.key("police", "2026-11") == ring.key("police", "2026-11")


def test_periods() -> None:
    t = "2026-11-25T10:07:00Z"
    assert [period_of(t, p) for p in ("day", "week", "month", "quarter", "year")] == [
        "2026-11-25",
        "2026-W48",
        "2026-11",
        "2026-Q4",
        "2026",
    ]
    assert bucket_time("2026-11-25T10:07:59+00:00", 3600) == "2026-11-25T10:00:00Z"


def test_consent_ids_normalise_the_identifier() -> None:
    key = b"k" * 32
    assert consent_id(key, "plate", "abc-123") == consent_id(key, "plate", "ABC 123")
    assert consent_id(key, "plate", "ABC123") != consent_id(key, "phone", "ABC123")


def test_consent_gating_and_withholding(policy: PrivacyPolicy) -> None:
    out, note = policy.view(incident(), "transit", allow("trip-alerts"), consent="withdrawn")
    assert out is None and note.action == "withhold" and note.consent == "withdrawn"
    out, note = policy.view(incident(), "parks", allow("events"), consent="expired")
    assert out is not None and note.action == "strip"
    assert set(out["data"]) == {"kind", "severity"} and "location" not in out
    # Processing on a public task is never gated by consent.
    out, note = policy.view(incident(), "transport", allow("operations"), consent="withdrawn")
    assert out is not None and note.consent == "n/a" and "plate" in out["data"]


def test_precedence() -> None:
    # 1. legal obligation beats erasure; so does a legal hold.
    tp = parse_privacy(PRIVACY).types  # type: ignore[union-attr]
    assert erasure_decision(tp["utility.meter_alarm"])[0] == "retain"
    assert erasure_decision(tp["traffic.incident"], legal_hold=True)[0] == "retain"
    assert erasure_decision(tp["traffic.incident"])[0] == "erase"
    assert erasure_decision(None)[0] == "erase"
    # 3. break-glass (vital interests) is not gated by consent.
    assert consent_applies("consent") and not consent_applies("consent", break_glass=True)
    assert not consent_applies("legal_obligation")


def test_break_glass_still_gets_transforms(policy: PrivacyPolicy) -> None:
    decision = allow("events", break_glass=True, grant="g-1")
    out, note = policy.view(incident(), "parks", decision, consent="withdrawn")
    assert out is not None and note.consent == "n/a" and out["breakglass"] == "g-1"
    assert out["data"]["plate"] == "****23"


def test_compiled_views_are_cached_per_key(policy: PrivacyPolicy) -> None:
    a = policy.compiled("traffic.incident", "transport", "operations")
    assert a is policy.compiled("traffic.incident", "transport", "operations")
    assert policy.compiled("unknown.type", "transport", "operations") is None
    assert city().privacy is not None


def test_without_a_consent_key_no_citizen_can_be_matched() -> None:
    ring = keyring()
    ring.consent = None
    policy = PrivacyPolicy(parse_privacy(PRIVACY), ring)  # type: ignore[arg-type]
    assert policy.subject_id(incident()) is None
    with_key = PrivacyPolicy(parse_privacy(PRIVACY), keyring())  # type: ignore[arg-type]
    assert with_key.subject_id(incident()) is not None
    assert with_key.subject_id(incident(plate="")) is None
    assert with_key.subject_id({**incident(), "type": "x.y"}) is None


def test_notes_are_audit_rows(policy: PrivacyPolicy) -> None:
    _, note = policy.view(incident(), "transport", allow("operations"))
    row = note.audit()
    assert row[:4] == [note.transform, "public_task", "n/a", "view"]
    assert row[4][0].startswith("transport/2026-11/")


@given(key=st.binary(min_size=16, max_size=200), message=st.binary(max_size=100))
def test_the_prepared_hmac_is_hmac_sha256(key: bytes, message: bytes) -> None:
    assert Signer(key).digest(message) == hmac.digest(key, message, "sha256")
    text = message.decode("latin-1")  # any identifier, spaces and hyphens included
    assert Signer(key).pseudonym(text) == pseudonym(key, text)
    # Spaces and hyphens never change the identifier (the fast path for plain ones agrees).
    assert normalise_subject(f"-{text} ") == normalise_subject(text)


def test_memos_stay_bounded(monkeypatch) -> None:
    import city.privacy.transforms as transforms

    monkeypatch.setattr(transforms, "CACHE_MAX", 1)
    for minute in range(3):
        assert bucket_time(f"2026-11-25T10:0{minute}:30Z", 60) == f"2026-11-25T10:0{minute}:00Z"
    for lat in (47.1, 47.2, 47.3):
        cell = h3.latlng_to_cell(lat, -122.3, 5)
        assert transforms.cell_centre(cell)["lat"] == round(h3.cell_to_latlng(cell)[0], 6)
    assert len(transforms._BUCKETS) <= 2 and len(transforms._CENTRES) <= 2
    for lat in (47.1, 47.2, 47.3):
        cell = h3.latlng_to_cell(lat, -122.3, 9)
        point = {"location": {"lat": lat, "lon": -122.3}}
        assert generalise_location(point, 7) == h3.cell_to_parent(cell, 7)
        assert generalise_location({**point, "h3cell": cell}, 7) == h3.cell_to_parent(cell, 7)
    assert len(transforms._CELL_TEXT) <= 2 and len(transforms._PARENTS) <= 2


def test_a_null_personal_field_stays_null(policy: PrivacyPolicy) -> None:
    event = incident()
    event["data"]["plate"] = None
    out, note = policy.view(event, "transport", allow("operations"))
    assert out is not None and out["data"]["plate"] is None and note.keys == ()
