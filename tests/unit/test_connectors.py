"""Connector configs (delivery:, csv:, mqtt:), field mappings and Standard Webhooks signing
(checked with the `standardwebhooks` package, not our own verifier)."""

from __future__ import annotations

import copy

import pytest
import yaml
from standardwebhooks import Webhook

from city.config import ConfigError, parse_city
from city.mapping import FieldMapping, MappingError, json_lookup, map_record, row_lookup
from jobs.channels.signed import (
    SecretError,
    decode_secret,
    load_secret,
    new_secret,
    sign,
    signed_headers,
)
from tests.conftest import SEATTLE

DOC = yaml.safe_load(SEATTLE.read_text())


def _parse(edit):
    doc = copy.deepcopy(DOC)
    edit(doc)
    return parse_city(doc, "city.yaml")


def _dept(doc, dept):
    return next(d for d in doc["departments"] if d["id"] == dept)


def test_signature_verifies_with_the_reference_library():
    secret = new_secret()
    key = decode_secret(secret)
    body = b'{"type":"cityrelay.inbox.batch","data":{"messages":[]}}'
    headers = signed_headers(key, "msg_1", body)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers)["type"] == "cityrelay.inbox.batch"
    with pytest.raises(Exception):  # noqa: B017 - any verification error
        Webhook(secret).verify(body + b" ", headers)
    assert sign(key, "a", 1, b"x") != sign(key, "a", 2, b"x")


def test_secrets_come_from_env_or_file(monkeypatch, tmp_path):
    secret = new_secret()
    monkeypatch.setenv("HOOK_SECRET", secret)
    assert load_secret("HOOK_SECRET", None, None) == decode_secret(secret)
    (tmp_path / "hook.secret").write_text(secret + "\n")
    assert load_secret(None, "hook.secret", tmp_path) == decode_secret(secret)
    monkeypatch.delenv("HOOK_SECRET")
    with pytest.raises(SecretError, match="HOOK_SECRET is not set"):
        load_secret("HOOK_SECRET", None, None)
    with pytest.raises(SecretError):
        decode_secret("whsec_not*base64")


def test_delivery_config_is_validated():
    def good(doc):
        _dept(doc, "sdot")["delivery"] = {
            "webhook": "https://tms.example/hook",
            "secret_env": "SDOT_HOOK",
            "ack_on_2xx": True,
        }

    config = _parse(good)
    delivery = config.department("sdot").delivery
    assert delivery is not None and delivery.ack_on_2xx and delivery.batch_max == 100

    def bad(doc):
        _dept(doc, "sdot")["delivery"] = {"webhook": "ftp://x"}

    with pytest.raises(ConfigError) as err:
        _parse(bad)
    assert "departments[" in str(err.value) and "delivery" in str(err.value)


def test_mqtt_section_cross_checked():
    def edit(doc):
        doc["mqtt"] = {"url": "mqtt://127.0.0.1:1883", "topics": [
            {"pattern": "sensors/air/+", "department": "nobody", "type": "environment.air_quality"},
            {"pattern": "a/b+/c", "department": "environment", "type": "no.such"},
        ]}  # fmt: skip

    with pytest.raises(ConfigError) as err:
        _parse(edit)
    text = str(err.value)
    assert "mqtt.topics[0].department" in text and "mqtt.topics[1].type" in text
    assert "mqtt.topics[1].pattern" in text


def test_json_mapping_with_topic_levels_and_derived_ids():
    data = {"sensor_id": "topic[2]", "pm25": "pm.2_5", "aqi": "aqi"}
    mapping = FieldMapping(id="seq", time="ts", lat="pos.lat", lon="pos.lon", data=data)
    payload = {"seq": 7, "ts": 1765069200, "pos": {"lat": 47.6, "lon": -122.3},
               "pm": {"2_5": 12.5}, "aqi": 40}  # fmt: skip
    args = dict(event_type="environment.air_quality", department="environment",
                fallback_id=lambda: "fb", id_kind="mqtt")  # fmt: skip
    one = map_record(mapping, json_lookup(payload, "sensors/air/aq-7"), id_scope="t1", **args)
    assert one["data"] == {"sensor_id": "aq-7", "pm25": 12.5, "aqi": 40}
    assert one["location"] == {"lat": 47.6, "lon": -122.3}
    assert one["time"].startswith("2025-12-07T")
    again = map_record(mapping, json_lookup(payload, "sensors/air/aq-7"), id_scope="t1", **args)
    other = map_record(mapping, json_lookup(payload, "sensors/air/aq-7"), id_scope="t2", **args)
    assert one["id"] == again["id"] != other["id"] and one["id"].startswith("mqtt-")
    no_id = map_record(mapping, json_lookup({**payload, "seq": None} | {}, "x"), id_scope="t",
                       **args)  # fmt: skip
    assert no_id["id"] != one["id"]
    with pytest.raises(MappingError, match="lat"):
        map_record(mapping, json_lookup({"aqi": 1}, "x"), id_scope="t", **args)


def test_row_mapping_skips_empty_cells():
    mapping = FieldMapping(lat="y", lon="x", data={"kind": "k", "severity": "s", "road": "r"})
    row = {"y": "47.6", "x": "-122.3", "k": "hazard", "s": "2", "r": " "}
    event = map_record(mapping, row_lookup(row), event_type="traffic.incident",
                       department="sdot", fallback_id=lambda: "csv-1", id_kind="csv",
                       id_scope="sdot")  # fmt: skip
    assert event["id"] == "csv-1" and event["data"] == {"kind": "hazard", "severity": "2"}
