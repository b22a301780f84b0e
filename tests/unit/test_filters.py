"""Subscription filters: the dialect a department writes, compiled to plain predicates."""

from __future__ import annotations

import pytest

from city.filters import FilterError, compile_filter

EVENT = {
    "id": "e1",
    "type": "traffic.incident",
    "department": "transportation",
    "priority": "high",
    "data": {
        "kind": "collision",
        "severity": 4,
        "road": "I-5 NB",
        "plate": "ABC123",
        "blocked": True,
        "geo": {"zone": "north"},
    },
}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"eq": {"data.kind": "collision"}}, True),
        ({"exact": {"type": "traffic.incident", "priority": "high"}}, True),
        ({"eq": {"data.kind": "closure"}}, False),
        ({"eq": {"data.severity": 4}}, True),
        ({"eq": {"data.severity": 4.0}}, True),
        ({"eq": {"data.blocked": True}}, True),
        ({"eq": {"data.severity": True}}, False),  # True is not 1 here
        ({"eq": {"data.blocked": 1}}, False),
        ({"ne": {"data.kind": "closure"}}, True),
        ({"ne": {"data.missing": "x"}}, True),
        ({"in": {"data.kind": ["collision", "closure"]}}, True),
        ({"in": {"data.kind": ["hazard"]}}, False),
        ({"in": {"data.geo": ["x"]}}, False),
        ({"in": {"data.blocked": [True]}}, True),
        ({"in": {"data.missing": ["x"]}}, False),
        ({"lt": {"data.severity": 5}}, True),
        ({"le": {"data.severity": 4}}, True),
        ({"gt": {"data.severity": 4}}, False),
        ({"ge": {"data.severity": 3}}, True),
        ({"gt": {"data.road": "I-4"}}, True),
        ({"gt": {"data.kind": 1}}, False),  # a string is never compared with a number
        ({"lt": {"data.blocked": 5}}, False),  # nor a bool
        ({"ge": {"data.missing": 1}}, False),
        ({"exists": "data.plate"}, True),
        ({"exists": ["data.plate", "data.hospital"]}, False),
        ({"exists": "data.geo.zone"}, True),
        ({"exists": "data.geo.zone.deeper"}, False),
        ({"exists": "data.kind.deeper"}, False),
        ({"prefix": {"type": "traffic."}}, True),
        ({"suffix": {"data.road": "NB"}}, True),
        ({"prefix": {"data.severity": "4"}}, False),
        ({"eq": {"data.geo.zone": "north"}}, True),
        ({"all": [{"eq": {"data.kind": "collision"}}, {"ge": {"data.severity": 3}}]}, True),
        (
            {
                "all": [
                    {"eq": {"data.kind": "collision"}},
                    {"ge": {"data.severity": 3}},
                    {"exists": "data.hospital"},
                ]
            },
            False,
        ),
        ({"any": [{"eq": {"data.kind": "closure"}}, {"ge": {"data.severity": 3}}]}, True),
        ({"any": [{"eq": {"data.kind": "closure"}}, {"ge": {"data.severity": 5}}]}, False),
        ({"not": {"eq": {"data.kind": "closure"}}}, True),
        ({"eq": {"data.kind": "collision"}, "not": {"exists": "data.plate"}}, False),
        ({"eq": {"subject": "x"}}, False),
    ],
)
def test_filter_operators(spec: dict, expected: bool) -> None:
    assert compile_filter(spec)(EVENT) is expected


def test_missing_data_or_non_dict_data_is_no_match() -> None:
    pred = compile_filter({"eq": {"data.kind": "collision"}})
    assert pred({"type": "x.y"}) is False
    assert pred({"type": "x.y", "data": None}) is False


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({}, ""),
        ([], ""),
        ({"regex": {"type": "x"}}, "regex"),
        ({"eq": "traffic"}, "eq"),
        ({"eq": {"data.kind": ["a"]}}, "eq.data.kind"),
        ({"in": {"data.kind": []}}, "in.data.kind"),
        ({"in": {"data.kind": [["a"]]}}, "in.data.kind"),
        ({"lt": {"data.severity": None}}, "lt.data.severity"),
        ({"prefix": {"type": 3}}, "prefix.type"),
        ({"exists": []}, "exists"),
        ({"exists": ["data..x"]}, "exists"),
        ({"all": []}, "all"),
        ({"any": [{"eq": {"type": "a"}}, {"nope": {}}]}, "any[1].nope"),
        ({"not": {"eq": {"": 1}}}, "not.eq."),
    ],
)
def test_bad_filters_say_where(spec: object, where: str) -> None:
    with pytest.raises(FilterError) as err:
        compile_filter(spec)
    assert err.value.where == where
