"""A city config problem is reported with the file, the path inside it and what is wrong."""

import copy

import pytest

from city.config import ConfigError, load_city, parse_city

BASE = {
    "city": "Testville",
    "layers": {"precincts": {"path": "p.geojson", "name_property": "name"}},
    "departments": [
        {
            "id": "police",
            "name": "Police",
            "jurisdiction": [{"layer": "precincts"}],
            "subscriptions": [{"id": "police-incidents", "types": ["traffic.*"]}],
        }
    ],
}


def problems_of(doc):
    with pytest.raises(ConfigError) as info:
        parse_city(doc, "city.yaml")
    return info.value.problems, str(info.value)


def test_the_demo_city_loads_with_more_than_twenty_departments(seattle):
    config, base = seattle
    assert len(config.departments) >= 20
    assert all((base / layer.path).exists() for layer in config.layers.values())
    assert config.department("fire").name.startswith("Seattle Fire")
    with pytest.raises(KeyError):
        config.department("nobody")


def test_valid_minimal_config_parses():
    config = parse_city(copy.deepcopy(BASE))
    assert config.department_ids == ["police"]


def test_unknown_layer_reference_names_the_path():
    doc = copy.deepcopy(BASE)
    doc["departments"][0]["jurisdiction"][0]["layer"] = "nowhere"
    problems, text = problems_of(doc)
    assert (
        "departments[0].jurisdiction[0].layer",
        "no layer named 'nowhere' in layers:",
    ) in problems
    assert text.startswith("city.yaml: departments[0].jurisdiction[0].layer")


def test_schema_errors_name_the_path():
    doc = copy.deepcopy(BASE)
    doc["departments"][0]["id"] = "Police Dept"
    doc["departments"][0]["subscriptions"][0]["types"] = ["Not A Type"]
    paths = {p for p, _ in problems_of(doc)[0]}
    assert {"departments[0].id", "departments[0].subscriptions[0].types"} <= paths


def test_cross_reference_problems_are_all_reported():
    doc = copy.deepcopy(BASE)
    dept = copy.deepcopy(doc["departments"][0])
    dept["jurisdiction"] = []
    dept["subscriptions"][0]["types"] = ["sewer.*"]
    doc["departments"].append(dept)
    doc["event_types"] = {
        "parking.Bad": {"priority": "routine", "fields": {"a": "str"}},
        "noise.level": {"fields": {"db": "decimal"}},
    }
    problems = dict(problems_of(doc)[0])
    assert "duplicate department id" in problems["departments[1].id"]
    assert "duplicate subscription id" in problems["departments[1].subscriptions[0].id"]
    assert "needs the department to have one" in problems["departments[1].subscriptions[0].scope"]
    assert "matches no known event type" in problems["departments[1].subscriptions[0].types"]
    assert "dotted" in problems["event_types.parking.Bad"]
    assert "needs a `priority:`" in problems["event_types.noise.level"]
    assert "unknown type 'decimal'" in problems["event_types.noise.level.fields"]


def test_new_type_without_fields_is_refused():
    doc = copy.deepcopy(BASE)
    doc["event_types"] = {"noise.level": {"priority": "routine"}}
    assert "needs `fields:`" in dict(problems_of(doc)[0])["event_types.noise.level"]


def test_not_a_mapping():
    assert problems_of(["a"])[0] == [
        ("", "the file must be a mapping (city:, layers:, departments:)")
    ]


def test_file_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_city(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("city: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: not valid YAML"):
        load_city(bad)
