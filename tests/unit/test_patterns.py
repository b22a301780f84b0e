"""Event type patterns: exact types, prefixes, and which patterns cover which."""

from __future__ import annotations

from city.patterns import pattern_covered, type_matcher


def test_type_patterns() -> None:
    match = type_matcher(["traffic.*", "health.emergency"])
    assert match("traffic.incident") and match("health.emergency")
    assert not match("health.checkup") and not match("trafficx.y")
    assert type_matcher(["*"])("anything.at_all")
    assert type_matcher(["a.b"])("a.b") and not type_matcher(["a.b"])("a.c")


def test_pattern_coverage_for_delegation() -> None:
    assert pattern_covered("traffic.incident", ["traffic.*"])
    assert pattern_covered("traffic.*", ["traffic.*"])
    assert pattern_covered("*", ["*"])
    assert not pattern_covered("*", ["traffic.*"])
    assert not pattern_covered("traffic.*", ["traffic.incident"])
    assert not pattern_covered("health.emergency", ["traffic.*"])
