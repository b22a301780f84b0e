"""bench/slot_groups.py and the slot-group counting of bench/chaos.py, as bench/cluster.py uses
them: the Seattle city split into three slot groups is a valid config, each department's events
go to its home group's ingest stream, and the cross-slot share counts the deliveries that
arrived in another group than the event's ingest stream, and only those."""

from __future__ import annotations

from bench.chaos import build_templates, cross_group_share
from bench.slot_groups import DEPARTMENT_GROUPS, Layout, partitions_section
from city.config import load_city
from city.routing import Router
from queues.keys import Keys
from tests.conftest import write_city

PREFIXES = ["{t-a}", "{t-b}", "{t-c}"]


def test_three_groups_of_seattle_load_and_keep_talking_departments_together(tmp_path) -> None:
    seattle, _ = load_city(write_city(tmp_path))
    departments = seattle.department_ids
    assert {d for group in DEPARTMENT_GROUPS for d in group} <= set(departments)
    city, _ = load_city(write_city(tmp_path, partitions=partitions_section(PREFIXES, departments)))
    assert city.partitions is not None
    layout = Layout.of(city.partitions)
    assert [k.prefix for k in layout.groups.values()] == PREFIXES
    assert {layout.home(d) for d in ("ems", "fire", "emergency-management", "spd-west")} == {"a"}
    assert {layout.home(d) for d in ("sdot", "transit", "traffic-management")} == {"b"}
    assert {layout.home(d) for d in ("environment", "spu-water")} == {"c"}
    assert layout.home("parks") == "a"  # listed nowhere: the default group


def test_events_enter_at_their_producers_group_and_some_deliveries_cross(tmp_path) -> None:
    departments = load_city(write_city(tmp_path))[0].department_ids
    path = write_city(tmp_path, partitions=partitions_section(PREFIXES, departments))
    city, base = load_city(path)
    assert city.partitions is not None
    layout = Layout.of(city.partitions)
    routine, emergency = build_templates(
        Router.from_config(city, base), Keys("unused"), departments, 8, layout
    )
    homes = [layout.home(d) for d in departments]
    crossing = 0
    for template in routine + emergency:
        assert template.stream.startswith(layout.groups[template.group].prefix + ":")
        crossing += any(homes[d] != template.group for d in template.expected)
    assert 0 < crossing < len(routine) + len(emergency)


def test_cross_slot_share_counts_arrived_deliveries_in_another_group() -> None:
    homes = ["a", "b", "a"]  # departments 0, 1, 2
    expected = [frozenset({0, 1}), frozenset({2}), frozenset({1})]
    origin = ["a", "b", "a"]  # event 1 enters on b and is delivered to department 2 on a
    counts = [bytearray([1, 0, 0]), bytearray([1, 0, 0]), bytearray([0, 1, 0])]
    # Delivered: (0, 0) same group, (0, 1) crossing, (1, 2) crossing; (2, 1) never arrived.
    assert cross_group_share(expected, origin, homes, counts) == (round(2 / 3, 3), 2)
