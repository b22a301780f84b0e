"""Emergency acknowledgement and escalation on fakeredis: the config section, tracking, the
ack and level-claim rules, and the escalation job's edge cases (the end-to-end stories are in
tests/scenarios/test_emergency_ack.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rq.registry import ScheduledJobRegistry

from city.config import parse_city
from city.errors import ConfigError
from city.escalation import (
    DEFAULT_ESCALATION,
    parse_escalation,
    parse_escalations,
    severity_of,
)
from city.events import Event, source_for
from city.routing import Delivery, Router
from city.sharing import Decision
from jobs.context import RouteContext
from jobs.emergency import (
    EscalationPlan,
    job_id,
    plan_for,
    recipients_of,
    run_level,
    track_emergencies,
    use_plan,
)
from queues.acks import EmergencyStore, acknowledge, record_inbox_acks
from queues.audit import AuditLog
from queues.inbox import Inbox
from queues.keys import Keys
from queues.priority import make_queue
from queues.streams import Producer
from tests.pipeline_harness import Harness
from tests.scenarios.emergency_city import LAYER

# --- the escalation: config section ----------------------------------------------------------


def test_defaults_when_a_department_has_no_section() -> None:
    config = parse_escalation(None)
    assert config is DEFAULT_ESCALATION
    assert config.deadline_s("Extreme") == 60 and config.deadline_s("Minor") == 300
    assert config.max_level == 3 and config.coordinator == "emergency-management"


def test_deadline_per_severity_with_a_default() -> None:
    config = parse_escalation({"ack_deadline_s": {"Extreme": 30, "Severe": 90}})
    assert config.deadline_s("Extreme") == 30 and config.deadline_s("Severe") == 90
    assert config.deadline_s("Moderate") == 300  # the default default
    assert parse_escalation({"ack_deadline_s": {"default": 45}}).deadline_s("Extreme") == 45


@pytest.mark.parametrize(
    ("raw", "where", "words"),
    [
        ({"ack_deadline_s": {"Extreme": 0}}, "escalation.ack_deadline_s", "between 0 and 86400"),
        ({"ack_deadline_s": {"Severe-ish": 5}}, "escalation.ack_deadline_s.Severe-ish", "Input"),
        ({"level_interval_s": -1}, "escalation.level_interval_s", "greater than 0"),
        ({"chain": [{"name": "Chief"}]}, "escalation.chain[0]", "needs `channels:` or a"),
        ({"max_level": 4}, "escalation.max_level", "less than or equal to 3"),
        ({"chains": []}, "escalation.chains", "Extra inputs"),
    ],
)
def test_bad_sections_name_the_place(raw: dict, where: str, words: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as caught:
        parse_escalation(raw, "city.yaml")
    (problem,) = caught.value.problems
    assert problem[0] == where and words in problem[1]
    assert str(caught.value).startswith("city.yaml: escalation")


def test_contacts_and_coordinator_must_be_departments() -> None:
    raw = {"chain": [{"name": "x", "department": "nope"}], "coordinator": "oem-typo"}
    with pytest.raises(ConfigError) as caught:
        parse_escalation(raw, departments=["fire", "oem"])
    assert [p[0] for p in caught.value.problems] == [
        "escalation.chain[0].department",
        "escalation.coordinator",
    ]
    # the default coordinator may be absent from a city: level 3 then only broadcasts
    assert parse_escalation({}, departments=["fire"]).coordinator == "emergency-management"


def test_every_department_is_checked_at_once() -> None:
    sections = {"fire": {"level_interval_s": 0}, "ems": None, "oem": {"chain": [{"name": "a"}]}}
    with pytest.raises(ConfigError) as caught:
        parse_escalations(sections, "city.yaml")
    assert [p[0] for p in caught.value.problems] == [
        "departments[0].escalation.level_interval_s",
        "departments[2].escalation.chain[0]",
    ]
    assert parse_escalations({"ems": None})["ems"] is DEFAULT_ESCALATION


@pytest.mark.parametrize(
    ("data", "severity"),
    [
        ({"severity": "Extreme"}, "Extreme"),
        ({"severity": 5}, "Extreme"),
        ({"severity": 4}, "Severe"),
        ({"severity": 9}, "default"),
        ({"severity": True}, "default"),
        ({"severity": "bad"}, "default"),
        ({}, "default"),
        (None, "default"),
    ],
)
def test_severity_of_an_event(data: Any, severity: str) -> None:
    assert severity_of({"data": data}) == severity


# --- a small city on fakeredis --------------------------------------------------------------


def small_city(tmp_path: Path, **fire: Any) -> Any:
    escalation = {"ack_deadline_s": {"default": 60}, "level_interval_s": 30}
    return parse_city(
        {
            "city": "T",
            "layers": {"city": {"path": LAYER}},
            "departments": [
                {
                    "id": "fire",
                    "name": "Fire",
                    "subscriptions": [
                        {"id": "f", "types": ["health.emergency"], "scope": "citywide"}
                    ],
                    "fallback": [{"kind": "file", "directory": str(tmp_path / "fire")}],
                    "escalation": {**escalation, **fire},
                },
                {
                    "id": "ems",
                    "name": "EMS",
                    "subscriptions": [
                        {"id": "e", "types": ["health.emergency"], "scope": "citywide"}
                    ],
                    "escalation": {**escalation, "max_level": 0},
                },
                {"id": "parks", "name": "Parks"},
            ],
            "sharing": {"policies": [{"id": "ems", "owner": "ems", "types": ["health.*"]}]},
        }
    )


def setup(redis: Any, keys: Keys, tmp_path: Path, **fire: Any) -> tuple[Harness, str]:
    config = small_city(tmp_path, **fire)
    h = Harness(redis, keys, config, Path("."), Router.from_config(config, Path(".")))
    event = Event.new("health.emergency", source_for("ems"),
                      {"incident_number": "1", "kind": "cardiac"})  # fmt: skip
    Producer(redis, "ems", keys).publish(event)
    h.run()
    return h, event.id


def overdue(redis: Any, keys: Keys, event_id: str, dept: str, level: int = 1) -> None:
    """Move a deadline (or the previous level's start) into the past."""
    key = keys.emergency(event_id)
    field = f"{dept}|deadline" if level == 1 else f"{dept}|l{level - 1}"
    redis.hset(key, field, int(redis.hget(key, field)) - 10_000_000)


def scheduled(redis: Any, keys: Keys) -> list[str]:
    return ScheduledJobRegistry(queue=make_queue(redis, keys, "escalation")).get_job_ids()


def test_tracking_records_deadlines_and_schedules_one_check(redis, keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    h, event_id = setup(redis, keys, tmp_path)
    found = EmergencyStore(redis, keys).status(event_id)
    assert found is not None and set(found.recipients) == {"fire", "ems"}
    fire = found.recipients["fire"]
    assert fire.deadline_ms - fire.delivered_ms == 60_000 and fire.state == "delivered"
    # ems has max_level 0: tracked (it must still acknowledge) but never escalated
    assert scheduled(redis, keys) == [job_id(keys, event_id, ["fire"], 1)]
    assert EmergencyStore(redis, keys).recent() == [(event_id, fire.delivered_ms)]


def test_only_untracked_emergencies_with_recipients_are_tracked(redis, keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = small_city(tmp_path)
    context = RouteContext(config=config, router=Router.from_config(config, Path(".")), keys=keys)
    emergency = {"id": "e1", "priority": "emergency", "type": "health.emergency"}
    routed = [
        (emergency, ["fire"], {"ing": "1-0"}),  # a duplicate (not fresh), tracked before
        ({**emergency, "id": "e2", "priority": "high"}, ["fire"], {}),
        ({**emergency, "id": "e3"}, [], {}),  # nobody to tell
    ]
    redis.hset(keys.emergency("e1"), "event", "{}")
    pipe = redis.pipeline(transaction=False)
    assert track_emergencies(pipe, context, routed, [False, True, True], 1.0) == 0
    pipe.execute()
    assert redis.keys(f"{keys.prefix}:emergency*") == [keys.emergency("e1").encode()]
    assert redis.hgetall(keys.emergency("e1")) == {b"event": b"{}"}
    assert scheduled(redis, keys) == []


def test_recipients_come_as_deliveries_ids_or_a_routing_outcome() -> None:
    def to(dept: str) -> Delivery:
        return Delivery(dept, "emergency-response", Decision(True, "policy", "emergency-response"))

    class Outcome:
        deliveries = [to("fire"), to("ems"), to("fire")]

    assert recipients_of([to("fire"), to("ems")]) == ["fire", "ems"]
    assert recipients_of(["ems", "fire"]) == ["ems", "fire"]
    assert recipients_of(Outcome()) == ["fire", "ems"]


def test_plan_is_built_once_per_config(tmp_path: Path, keys: Keys) -> None:
    config = small_city(tmp_path)
    context = RouteContext(config=config, router=Router.from_config(config, Path(".")), keys=keys)
    plan = plan_for(context)
    assert plan_for(context) is plan and plan.escalation("nobody") is DEFAULT_ESCALATION
    context.config = small_city(tmp_path, level_interval_s=5)  # a reloaded config
    assert plan_for(context).escalation("fire").level_interval_s == 5


def test_a_bad_section_at_run_time_still_tracks_with_defaults(
    redis, keys, tmp_path, caplog
) -> None:  # type: ignore[no-untyped-def]
    config = small_city(tmp_path)
    config.departments[0].fallback = [{"kind": "pager"}]  # slipped past config loading
    context = RouteContext(config=config, router=Router.from_config(config, Path(".")), keys=keys)
    plan = plan_for(context)
    assert "departments[0].fallback[0]" in caplog.text
    assert plan.escalation("fire") is DEFAULT_ESCALATION and plan.fallback == {}
    assert plan.departments == ["fire", "ems", "parks"]


def test_plan_reports_bad_channels_with_their_paths(tmp_path: Path) -> None:
    config = small_city(tmp_path, chain=[{"name": "c", "channels": [{"kind": "pager"}]}])
    config.departments[1].fallback = [{"kind": "webhook", "url": "ftp://x"}]
    with pytest.raises(ConfigError) as caught:
        EscalationPlan.from_config(config, source="city.yaml")
    places = [p[0] for p in caught.value.problems]
    assert places[0] == "departments[0].escalation.chain[0].channels[0]"
    assert places[1] == "departments[1].fallback[0].url"


# --- acknowledgements -----------------------------------------------------------------------


def test_first_acknowledgement_counts_and_the_check_audits_it(redis, keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    h, event_id = setup(redis, keys, tmp_path)
    (first,) = acknowledge(redis, keys, [event_id], "fire", "cli:ann")
    (again,) = acknowledge(redis, keys, [event_id], "fire", "cli:bob")
    assert first.outcome == "acked" and first.ok
    assert again.outcome == "already" and again.at_ms == first.at_ms and again.ok
    fire = EmergencyStore(redis, keys).status(event_id).recipients["fire"]
    assert (fire.acked_ms, fire.ack_by, fire.state) == (first.at_ms, "cli:ann", "acknowledged")
    (parks,) = acknowledge(redis, keys, [event_id], "parks", "cli:x")
    (unknown,) = acknowledge(redis, keys, ["no-such-event"], "fire", "cli:x")
    assert (parks.outcome, unknown.outcome) == ("not_recipient", "untracked")
    assert not parks.ok and not unknown.ok
    assert acknowledge(redis, keys, [], "fire", "x") == []
    # the deadline check finds it, stops, and audits it - once, however often it runs
    overdue(redis, keys, event_id, "fire")
    for _ in range(2):
        assert run_level(h.context, redis, event_id, ["fire"], 1) == {"fire": "acked"}
    records = [r for r in AuditLog(redis, keys).records() if r.kind == "emergency.ack"]
    assert [(r.body["dept"], r.body["at_ms"], r.actor) for r in records] == [
        ("fire", first.at_ms, "cli:ann")
    ]
    fire = EmergencyStore(redis, keys).status(event_id).recipients["fire"]
    assert (fire.acked_ms, fire.ack_by, fire.stopped_at_level) == (first.at_ms, "cli:ann", 1)


def test_a_malformed_ack_value_still_stops_escalation(redis, keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    h, event_id = setup(redis, keys, tmp_path)
    redis.set(keys.ack("fire", event_id), "seen")  # written by a department's own client
    overdue(redis, keys, event_id, "fire")
    assert run_level(h.context, redis, event_id, ["fire"], 1) == {"fire": "acked"}
    (record,) = [r for r in AuditLog(redis, keys).records() if r.kind == "emergency.ack"]
    assert record.actor == "seen" and record.body["at_ms"] == 0


def test_acking_inbox_entries_by_id_acknowledges_only_emergencies(redis, keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    h, event_id = setup(redis, keys, tmp_path)
    inbox = Inbox(redis, "fire", keys)
    (message,) = inbox.read()
    stream = keys.inbox("fire")
    routine = redis.xadd(stream, {"e": json.dumps({"id": "r1"}), "pri": "routine"}).decode()
    assert record_inbox_acks(redis, keys, "fire", stream, [routine], "x") == []
    assert inbox.ack([message.entry_id, routine]) == 1  # only the first was read
    assert EmergencyStore(redis, keys).status(event_id).recipients["fire"].ack_by == "inbox:main"


# --- the escalation job's edge cases ----------------------------------------------------------


def test_a_check_that_runs_early_reschedules_itself(redis, keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    h, event_id = setup(redis, keys, tmp_path)
    assert run_level(h.context, redis, event_id, ["fire"], 1) == {"fire": "early"}
    assert job_id(keys, event_id, ["fire"], 1) in scheduled(redis, keys)
    assert any(j.endswith("-l1-at" + redis.hget(keys.emergency(event_id), "fire|deadline").decode())
               for j in scheduled(redis, keys))  # fmt: skip
    assert Inbox(redis, "fire", keys).backlog()["length"] == 1  # no reminder yet


def test_levels_run_once_and_resume_a_level_that_crashed(redis, keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    h, event_id = setup(redis, keys, tmp_path, max_level=1, broadcast_all=False)
    overdue(redis, keys, event_id, "fire")
    store = EmergencyStore(redis, keys)
    # a worker claimed level 1 (the reminder is appended with the claim) and died
    claim = store.claim_level(
        event_id, "fire", 1, [keys.inbox("fire")], [("e", "{}"), ("pri", "x")]
    )
    assert claim.outcome == "claimed"
    assert run_level(h.context, redis, event_id, ["fire"], 1) == {"fire": "resume"}
    assert len(list((tmp_path / "fire").glob("*.json"))) == 1  # fallback sent on resume
    assert Inbox(redis, "fire", keys).backlog()["length"] == 2  # one reminder, not two
    assert run_level(h.context, redis, event_id, ["fire"], 1) == {"fire": "done"}
    # max_level 1: nothing further is scheduled
    assert job_id(keys, event_id, ["fire"], 2) not in scheduled(redis, keys)
    assert run_level(h.context, redis, event_id, ["ems", "parks"], 1) == {
        "ems": "early",
        "parks": "not_recipient",
    }


def test_level_three_without_coordinator_or_broadcast_reaches_nobody_new(
    redis, keys, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    h, event_id = setup(redis, keys, tmp_path, broadcast_all=False)
    # level 3 directly (level 2 never ran: its due time is unknown, so it runs now)
    assert run_level(h.context, redis, event_id, ["fire"], 3) == {"fire": "claimed"}
    level = EmergencyStore(redis, keys).status(event_id).recipients["fire"].levels[3]
    assert level.result == {"kind": "escalation", "notices": [], "reached": False, "channels": []}
    assert Inbox(redis, "parks", keys).backlog()["length"] == 0


def test_notices_to_other_departments_carry_no_personal_fields(redis, keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    h, event_id = setup(redis, keys, tmp_path)
    assert run_level(h.context, redis, event_id, ["fire"], 3) == {"fire": "claimed"}
    (notice,) = Inbox(redis, "parks", keys).read()
    assert notice.event_id == event_id and notice.event["type"] == "health.emergency"
    assert notice.event["data"] == {"kind": "cardiac"}  # no incident number
    assert notice.via["escalation"] == {"level": 3, "for": "fire", "kind": "escalation"}


def test_an_expired_record_is_not_escalated(redis, keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    h, event_id = setup(redis, keys, tmp_path)
    redis.delete(keys.emergency(event_id))
    assert run_level(h.context, redis, event_id, ["fire"], 1) == {"fire": "untracked"}
    assert EmergencyStore(redis, keys).status(event_id) is None


def test_installed_plan_is_used(redis, keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    h, event_id = setup(redis, keys, tmp_path)
    plan = EscalationPlan.from_config(small_city(tmp_path, level_interval_s=1))
    use_plan(h.context, plan)
    assert plan_for(h.context) is plan


def test_a_reminder_shows_only_public_text_never_fields_beyond_the_recipients_view(
    redis, keys, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    config = small_city(tmp_path)
    h = Harness(redis, keys, config, Path("."), Router.from_config(config, Path(".")))
    event = Event.new("health.emergency", source_for("ems"),
                      {"incident_number": "9", "kind": "trauma", "hospital": "Harborview",
                       "patients": 3})  # fmt: skip
    Producer(redis, "ems", keys).publish(event)
    h.run()
    overdue(redis, keys, event.id, "fire")
    assert run_level(h.context, redis, event.id, ["fire"], 1) == {"fire": "claimed"}
    reminder = Inbox(redis, "fire", keys).history(10)[-1]
    assert reminder.via["escalation"]["kind"] == "reminder"
    assert reminder.event["id"] == event.id and "hospital" not in reminder.event["data"]
