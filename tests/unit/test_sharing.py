"""Sharing decisions: the stories the issue asks for, and the rules behind them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from city.config import ConfigError, parse_city
from city.sharing import (
    Authorizer,
    Grant,
    GrantError,
    GrantSet,
    PolicySet,
    SubscriptionSpec,
    check_new_grant,
    compile_subscription,
    compile_subscriptions,
    descendants,
    explain,
    parse_sharing,
    view,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOW = T0.timestamp()

CITY = {
    "city": "testville",
    "layers": {"precincts": {"path": "precincts.geojson", "name_property": "name"}},
    "departments": [
        {
            "id": "transportation",
            "name": "Transportation",
            "jurisdiction": [{"layer": "precincts"}],
            "subscriptions": [{"id": "sdot-traffic", "types": ["traffic.*"], "scope": "citywide"}],
        },
        {
            "id": "police",
            "name": "Police",
            "jurisdiction": [{"layer": "precincts", "zones": ["North", "East"]}],
            "subscriptions": [
                {"id": "spd-traffic", "types": ["traffic.incident"]},
                {
                    "id": "spd-investigations",
                    "types": ["traffic.incident"],
                    "scope": "citywide",
                    "purpose": "investigation",
                },
            ],
        },
        {
            "id": "fire",
            "name": "Fire",
            "jurisdiction": [{"layer": "precincts", "zones": ["North"]}],
            "subscriptions": [{"id": "sfd-traffic", "types": ["traffic.*"]}],
        },
        {
            "id": "parks",
            "name": "Parks",
            "jurisdiction": [{"layer": "precincts", "zones": ["South"]}],
            "subscriptions": [{"id": "parks-all", "types": ["traffic.*"], "scope": "citywide"}],
        },
        {
            "id": "health",
            "name": "Public Health",
            "jurisdiction": [{"layer": "precincts"}],
            "subscriptions": [
                {
                    "id": "health-research",
                    "types": ["traffic.*"],
                    "scope": "citywide",
                    "purpose": "research",
                }
            ],
        },
        {"id": "utilities", "name": "Utilities", "jurisdiction": [{"layer": "precincts"}]},
    ],
}

SHARING = {
    "policies": [
        {
            "id": "traffic-for-operations",
            "owner": "transportation",
            "types": ["traffic.*"],
            "purposes": ["operations"],
            "fields": ["kind", "severity", "lanes_blocked", "road"],
        },
        {
            "id": "parks-not-traffic",
            "owner": "transportation",
            "effect": "forbid",
            "recipients": ["parks"],
            "types": ["traffic.*"],
        },
    ]
}

INCIDENT: dict[str, Any] = {
    "id": "evt-1",
    "type": "traffic.incident",
    "source": "/city/transportation",
    "department": "transportation",
    "time": T0.isoformat(),
    "data": {
        "kind": "collision",
        "severity": 4,
        "lanes_blocked": 2,
        "road": "Aurora Ave N",
        "plate": "ABC1234",
        "description": "two cars",
    },
}


def grant(**kw: Any) -> Grant:
    base: dict[str, Any] = dict(
        owner="transportation",
        grantee="police",
        grantor="transportation",
        types=("traffic.incident",),
        purposes=("investigation",),
        valid_from=T0,
        valid_until=T0 + timedelta(hours=1),
        created_at=T0,
    )
    base.update(kw)
    return Grant(**base)


@pytest.fixture
def city() -> Any:
    return parse_city(CITY)


@pytest.fixture
def policies(city: Any) -> PolicySet:
    return PolicySet.from_config(parse_sharing(SHARING, departments=city.department_ids))


def decisions(city: Any, auth: Authorizer, event: dict, now: float = NOW) -> dict[str, Any]:
    index = compile_subscriptions(city.departments)
    return {f"{s.dept}/{s.id}": auth.decide(event, s, now) for s in index.for_type(event["type"])}


def test_traffic_incident_affecting_several_departments(city: Any, policies: PolicySet) -> None:
    auth = Authorizer(policies, GrantSet())
    got = decisions(city, auth, INCIDENT)
    # The owner sees everything of its own.
    own = got["transportation/sdot-traffic"]
    assert (
        own.allow and own.reason == "own-data" and view(INCIDENT, own)["data"] == INCIDENT["data"]
    )
    # Police and fire get it for operations, without the plate or the free text.
    for key in ("police/spd-traffic", "fire/sfd-traffic"):
        d = got[key]
        assert d.allow and d.policy == "traffic-for-operations" and d.purpose == "operations"
        delivered = view(INCIDENT, d)
        assert delivered["data"] == {
            "kind": "collision",
            "severity": 4,
            "lanes_blocked": 2,
            "road": "Aurora Ave N",
        }
        assert delivered["purpose"] == "operations"
    # No permit covers investigation without a grant; research is never permitted.
    assert got["police/spd-investigations"].reason == "no-permit"
    assert not got["health/health-research"].allow
    # A forbid beats the permit for everyone ("*").
    parks = got["parks/parks-all"]
    assert not parks.allow and parks.reason == "forbidden" and parks.policy == "parks-not-traffic"
    # Utilities has no subscription: never a candidate.
    assert not any(k.startswith("utilities/") for k in got)


def test_spatial_scope_of_subscriptions(city: Any) -> None:
    index = compile_subscriptions(city.departments)
    police = index.get("police", "spd-traffic")
    assert police.in_scope([("precincts", "North")])
    assert not police.in_scope([("precincts", "South")])
    assert index.get("police", "spd-investigations").in_scope([("precincts", "South")])
    whole = index.get("health", "health-research")
    assert whole.zones is None
    area = compile_subscription(
        city.department("parks"),
        {
            "id": "parks-area",
            "types": ["traffic.*"],
            "scope": "area",
            "area": [{"layer": "precincts", "zones": ["West"]}, {"layer": "wards"}],
        },
    )
    assert area.in_scope([("precincts", "West")]) and area.in_scope([("wards", "7")])
    assert not area.in_scope([("precincts", "North")])
    # A department whose jurisdiction is a whole layer covers every zone of it.
    whole_layer = compile_subscription(
        city.department("transportation"), SubscriptionSpec(id="j", types=["a.b"])
    )
    assert whole_layer.in_scope([("precincts", "Any")])
    assert not whole_layer.in_scope([("wards", "Any")])
    with pytest.raises(KeyError):
        index.get("police", "nope")


def test_subscription_spec_validation() -> None:
    with pytest.raises(ValueError, match="area"):
        SubscriptionSpec(id="s", types=["a.b"], scope="area")
    with pytest.raises(ValueError, match="filter"):
        SubscriptionSpec(id="s", types=["a.b"], filter={"bogus": {}})
    with pytest.raises(ValueError, match="neither an event type"):
        SubscriptionSpec(id="s", types=["Traffic!"])


def test_subscription_filter_is_applied_in_the_decision(city: Any, policies: PolicySet) -> None:
    sub = compile_subscription(
        city.department("fire"),
        {"id": "sfd-severe", "types": ["traffic.*"], "filter": {"ge": {"data.severity": 5}}},
    )
    auth = Authorizer(policies)
    assert auth.decide(INCIDENT, sub, NOW).reason == "no-match"
    severe = {**INCIDENT, "data": {**INCIDENT["data"], "severity": 5}}
    assert auth.decide(severe, sub, NOW).allow
    other_type = {**INCIDENT, "type": "health.emergency"}
    assert auth.decide(other_type, sub, NOW).reason == "no-match"
    assert sub.matches(severe) and not sub.matches(INCIDENT)


def test_police_see_plates_only_for_investigation_and_only_until_expiry(
    city: Any, policies: PolicySet
) -> None:
    until = T0 + timedelta(hours=2)
    g = grant(fields=("kind", "severity", "road", "plate"), valid_until=until)
    auth = Authorizer(policies, GrantSet([g], version=1))
    index = compile_subscriptions(city.departments)
    ops, inv = index.get("police", "spd-traffic"), index.get("police", "spd-investigations")

    d_ops = auth.decide(INCIDENT, ops, NOW)
    assert "plate" not in view(INCIDENT, d_ops)["data"]

    d_inv = auth.decide(INCIDENT, inv, NOW)
    assert d_inv.allow and d_inv.grant == g.id and d_inv.purpose == "investigation"
    delivered = view(INCIDENT, d_inv)
    assert delivered["data"]["plate"] == "ABC1234"
    assert "description" not in delivered["data"] and delivered["purpose"] == "investigation"

    # The last second before expiry still delivers; at the expiry second it stops.
    assert auth.decide(INCIDENT, inv, until.timestamp() - 1).allow
    at_expiry = auth.decide(INCIDENT, inv, until.timestamp())
    assert not at_expiry.allow and at_expiry.reason == "no-permit"
    # Before valid_from, nothing either.
    assert not auth.decide(INCIDENT, inv, NOW - 1).allow


def test_grant_and_permit_for_the_same_purpose_union_their_fields(policies: PolicySet) -> None:
    g = grant(purposes=("operations",), fields=("plate",))
    auth = Authorizer(policies, GrantSet([g]))
    sub = compile_subscription(
        type("D", (), {"id": "police", "jurisdiction": []})(),
        {"id": "s", "types": ["traffic.*"], "scope": "citywide"},
    )
    d = auth.decide(INCIDENT, sub, NOW)
    assert d.reason == "policy" and d.grant == g.id
    assert d.fields == {"kind", "severity", "lanes_blocked", "road", "plate"}
    # Two grants: the second widens to all fields (None).
    g2 = grant(purposes=("operations",), fields=None, id="g-all")
    d = Authorizer(policies, GrantSet([g, g2])).decide(INCIDENT, sub, NOW)
    assert d.fields is None


def _dept(dept_id: str) -> Any:
    return type("D", (), {"id": dept_id, "jurisdiction": []})()


def _sub(dept_id: str, purpose: str = "operations", types: tuple[str, ...] = ("traffic.*",)):
    return compile_subscription(
        _dept(dept_id),
        {"id": f"{dept_id}-s", "types": list(types), "scope": "citywide", "purpose": purpose},
    )


def test_conditional_policies_and_field_forbids() -> None:
    sharing = parse_sharing(
        {
            "policies": [
                {
                    "id": "severe-only",
                    "owner": "transportation",
                    "types": ["traffic.*"],
                    "when": {"ge": {"data.severity": 4}},
                    "fields": ["kind", "road"],
                },
                {
                    "id": "also-desc",
                    "owner": "transportation",
                    "types": ["traffic.*"],
                    "when": {"exists": "data.description"},
                    "fields": ["description"],
                },
                {
                    "id": "never-plates",
                    "owner": "transportation",
                    "effect": "forbid",
                    "types": ["traffic.*"],
                    "fields": ["plate", "road"],
                    "when": {"eq": {"data.kind": "collision"}},
                },
                {
                    "id": "no-hazards",
                    "owner": "transportation",
                    "effect": "forbid",
                    "types": ["traffic.*"],
                    "when": {"eq": {"data.kind": "hazard"}},
                },
                {
                    "id": "all-for-fire",
                    "owner": "transportation",
                    "recipients": ["fire"],
                    "types": ["traffic.incident"],
                    "purposes": ["operations"],
                },
                {
                    "id": "fire-no-plates",
                    "owner": "transportation",
                    "recipients": ["fire"],
                    "effect": "forbid",
                    "types": ["traffic.incident"],
                    "fields": ["plate"],
                },
            ]
        }
    )
    auth = Authorizer(PolicySet.from_config(sharing))
    police = _sub("police")
    d = auth.decide(INCIDENT, police, NOW)
    assert d.allow and d.policy == "severe-only" and d.fields == {"kind", "description"}
    mild = {**INCIDENT, "data": {"kind": "congestion", "severity": 2}}
    assert auth.decide(mild, police, NOW).reason == "no-permit"
    hazard = {**INCIDENT, "data": {**INCIDENT["data"], "kind": "hazard"}}
    assert auth.decide(hazard, police, NOW).reason == "forbidden"
    # All fields permitted, one forbidden: it travels as a redaction.
    fire = auth.decide(INCIDENT, _sub("fire"), NOW)
    assert fire.fields is None and fire.redact == {"plate", "road"}
    assert set(view(INCIDENT, fire)["data"]) == {"kind", "severity", "lanes_blocked", "description"}
    # Same decision object for the same outcome (memoised plans).
    assert auth.decide(INCIDENT, police, NOW) is d


def test_static_plans_union_fields_and_redact() -> None:
    sharing = parse_sharing(
        {
            "policies": [
                {"id": "a", "owner": "transportation", "types": ["traffic.*"], "fields": ["kind"]},
                {
                    "id": "b",
                    "owner": "transportation",
                    "types": ["traffic.*"],
                    "fields": ["road", "plate"],
                },
                {
                    "id": "c",
                    "owner": "transportation",
                    "effect": "forbid",
                    "types": ["traffic.*"],
                    "fields": ["plate"],
                },
            ]
        }
    )
    d = Authorizer(PolicySet.from_config(sharing)).decide(INCIDENT, _sub("police"), NOW)
    assert d.allow and d.policy == "a" and d.fields == {"kind", "road"} and not d.redact


def test_events_without_owner_are_denied(policies: PolicySet) -> None:
    event = {k: v for k, v in INCIDENT.items() if k != "department"}
    assert Authorizer(policies).decide(event, _sub("police"), NOW).reason == "no-owner"


def test_break_glass_overrides_default_deny_and_forbid_for_a_limited_time(
    policies: PolicySet,
) -> None:
    bg = grant(
        owner="*",
        grantee="parks",
        grantor="parks",
        types=("traffic.*",),
        purposes=("*",),
        break_glass=True,
        reason="flood evacuation",
        valid_until=T0 + timedelta(minutes=30),
    )
    check_new_grant(bg, {}, NOW, break_glass_max_minutes=60)
    auth = Authorizer(policies, GrantSet([bg]))
    parks = _sub("parks")
    d = auth.decide(INCIDENT, parks, NOW)
    assert d.allow and d.break_glass and d.grant == bg.id and d.policy == "parks-not-traffic"
    assert view(INCIDENT, d)["breakglass"] == bg.id
    assert not auth.decide(INCIDENT, parks, NOW + 1800).allow
    # Where nothing forbids, it overrides default deny (health research).
    bg2 = grant(
        owner="*",
        grantee="health",
        grantor="health",
        types=("traffic.*",),
        purposes=("*",),
        break_glass=True,
        reason="mass casualty",
        valid_until=T0 + timedelta(minutes=30),
    )
    auth = Authorizer(policies, GrantSet([bg2]))
    d = auth.decide(INCIDENT, _sub("health", purpose="research"), NOW)
    assert d.allow and d.reason == "break-glass"
    assert not auth.decide(INCIDENT, _sub("health", purpose="research"), NOW + 1800).allow
    with pytest.raises(GrantError, match="at most 10 minutes"):
        check_new_grant(bg, {}, NOW, break_glass_max_minutes=10)
    with pytest.raises(GrantError, match="declared by"):
        check_new_grant(bg.model_copy(update={"grantor": "police"}), {}, NOW)


def test_grant_model_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="after valid_from"):
        grant(valid_until=T0)
    with pytest.raises(ValueError, match="reason"):
        grant(break_glass=True)
    with pytest.raises(ValueError, match="cannot be delegated"):
        grant(break_glass=True, reason="x", delegate_depth=1)
    with pytest.raises(ValueError, match="only a break-glass"):
        grant(owner="*")
    with pytest.raises(ValueError, match="names its purposes"):
        grant(purposes=("*",))
    with pytest.raises(ValueError, match="purpose"):
        grant(purposes=("Bad Purpose",))
    with pytest.raises(ValueError, match="grantee must be"):
        grant(grantee="Police!")
    with pytest.raises(ValueError, match="owner must be"):
        grant(owner="Trans portation")
    with pytest.raises(ValueError, match="timezone"):
        grant(valid_from=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="neither an event type"):
        grant(types=("Traffic",))
    g = grant()
    assert g.active(NOW) and not g.active(NOW + 3600)


def test_root_grants_come_from_the_owner() -> None:
    check_new_grant(grant(), {}, NOW)  # the owner grants: fine
    with pytest.raises(GrantError, match="only transportation may grant"):
        check_new_grant(grant(grantor="police"), {}, NOW)
    with pytest.raises(GrantError, match="its own data"):
        check_new_grant(grant(grantee="transportation"), {}, NOW)
    g = grant()
    with pytest.raises(GrantError, match="already exists"):
        check_new_grant(g, {g.id: g}, NOW)


def test_delegation_depth_and_never_beyond_own_rights() -> None:
    root = grant(
        id="g-root",
        types=("traffic.*",),
        purposes=("investigation", "operations"),
        fields=("kind", "plate"),
        delegate_depth=2,
    )
    existing = {root.id: root}
    child = grant(
        id="g-child",
        parent=root.id,
        grantor="police",
        grantee="fire",
        fields=("plate",),
        delegate_depth=1,
    )
    check_new_grant(child, existing, NOW)
    existing[child.id] = child
    grandchild = grant(
        id="g-grand", parent=child.id, grantor="fire", grantee="health", fields=("plate",)
    )
    check_new_grant(grandchild, existing, NOW)
    existing[grandchild.id] = grandchild
    too_deep = grant(
        id="g-deep", parent=grandchild.id, grantor="health", grantee="parks", fields=("plate",)
    )
    with pytest.raises(GrantError, match="does not allow re-granting"):
        check_new_grant(too_deep, existing, NOW)
    wide = grant(
        id="g-wide",
        parent=root.id,
        grantor="police",
        grantee="parks",
        types=("health.*",),
        purposes=("research",),
        fields=None,
        delegate_depth=2,
        owner="utilities",
        valid_until=T0 + timedelta(days=2),
    )
    with pytest.raises(GrantError) as err:
        check_new_grant(wide, existing, NOW)
    for expected in ("types", "purposes", "fields", "validity", "delegate_depth", "owner"):
        assert expected in str(err.value)
    with pytest.raises(GrantError, match="only police"):
        check_new_grant(
            grant(id="g-x", parent=root.id, grantor="fire", grantee="parks", fields=("plate",)),
            existing,
            NOW,
        )
    with pytest.raises(GrantError, match="does not exist"):
        check_new_grant(grant(id="g-y", parent="g-none", grantor="police"), existing, NOW)
    with pytest.raises(GrantError, match="not active"):
        check_new_grant(
            grant(id="g-z", parent=root.id, grantor="police", grantee="parks", fields=("plate",)),
            existing,
            NOW + 7200,
        )
    glass = grant(
        id="g-bg",
        owner="*",
        grantee="police",
        grantor="police",
        purposes=("*",),
        break_glass=True,
        reason="storm",
    )
    with pytest.raises(GrantError, match="break-glass grant cannot be delegated"):
        check_new_grant(
            grant(id="g-q", parent=glass.id, grantor="police", grantee="fire"),
            {glass.id: glass},
            NOW,
        )


def test_revoking_a_delegator_stops_every_sub_grant() -> None:
    root = grant(id="g-root", delegate_depth=2)
    child = grant(id="g-child", parent="g-root", grantor="police", grantee="fire", delegate_depth=1)
    grandchild = grant(id="g-grand", parent="g-child", grantor="fire", grantee="health")
    other = grant(id="g-other", grantee="fire")
    grants = {g.id: g for g in (root, child, grandchild, other)}
    assert descendants(grants, "g-root") == ["g-child", "g-grand"]
    policies = PolicySet()
    fire, health = _sub("fire", "investigation"), _sub("health", "investigation")
    auth = Authorizer(policies, GrantSet(grants.values()))
    assert auth.decide(INCIDENT, health, NOW).grant == "g-grand"
    revoked = {**grants, "g-root": root.model_copy(update={"revoked_at": T0})}
    auth = Authorizer(policies, GrantSet(revoked.values()))
    assert not auth.decide(INCIDENT, health, NOW).allow
    # fire still has its own independent grant
    assert auth.decide(INCIDENT, fire, NOW).grant == "g-other"
    # A sub-grant whose parent vanished from the store counts for nothing either.
    orphan = Authorizer(policies, GrantSet([grandchild]))
    assert not orphan.decide(INCIDENT, health, NOW).allow
    # A child never outlives or out-fields its parent, even if stored wider.
    wide = grant(
        id="g-wide",
        parent="g-root",
        grantor="police",
        grantee="parks",
        fields=("plate",),
        valid_until=T0 + timedelta(days=9),
    )
    narrow_root = root.model_copy(update={"fields": ("kind",)})
    auth = Authorizer(policies, GrantSet([narrow_root, wide]))
    parks = _sub("parks", "investigation")
    assert auth.decide(INCIDENT, parks, NOW).fields == frozenset()
    assert not auth.decide(INCIDENT, parks, NOW + 3600).allow
    # Nor types or purposes beyond the parent's, nor another owner's data.
    sneaky = grant(
        id="g-sneaky",
        parent="g-root",
        grantor="police",
        grantee="parks",
        types=("traffic.*",),
        purposes=("investigation", "research"),
    )
    auth = Authorizer(policies, GrantSet([root, sneaky]))
    closure = {**INCIDENT, "type": "traffic.closure"}
    assert not auth.decide(closure, _sub("parks", "investigation"), NOW).allow
    assert not auth.decide(INCIDENT, _sub("parks", "research"), NOW).allow
    assert auth.decide(INCIDENT, _sub("parks", "investigation"), NOW).grant == "g-sneaky"
    other_owner = grant(
        id="g-owner", parent="g-root", owner="utilities", grantor="police", grantee="parks"
    )
    assert GrantSet([root, other_owner]).effective(other_owner) is None
    loop = grant(id="g-loop", parent="g-loop", grantor="police")
    assert GrantSet([loop]).effective(loop) is None


def test_parse_sharing_reports_every_problem_with_its_path() -> None:
    with pytest.raises(ConfigError) as err:
        parse_sharing(
            {
                "policies": [
                    {"id": "p", "owner": "nobody", "types": ["traffic.*"], "recipients": ["ghost"]},
                    {"id": "p", "owner": "police", "types": ["traffic.*"], "when": {"bad": 1}},
                ],
                "rules": [
                    {
                        "id": "r",
                        "when": {"types": ["health.*"]},
                        "emit": [{"type": "transport.dispatch", "department": "ghost"}],
                    },
                    {
                        "id": "r",
                        "when": {"types": ["health.*"]},
                        "emit": [{"type": "transport.dispatch", "department": "police"}],
                    },
                ],
            },
            "city.yaml",
            departments=["police"],
        )
    text = str(err.value)
    assert "sharing.policies[1].when" in text
    with pytest.raises(ConfigError) as err:
        parse_sharing(
            {
                "policies": [
                    {"id": "p", "owner": "nobody", "types": ["traffic.*"], "recipients": ["ghost"]},
                    {"id": "p", "owner": "police", "types": ["traffic.*"]},
                ],
                "rules": [
                    {
                        "id": "r",
                        "when": {"types": ["health.*"]},
                        "emit": [{"type": "transport.dispatch", "department": "ghost"}],
                    },
                    {
                        "id": "r",
                        "when": {"types": ["health.*"]},
                        "emit": [{"type": "transport.dispatch", "department": "police"}],
                    },
                ],
            },
            "city.yaml",
            departments=["police"],
        )
    problems = dict(err.value.problems)
    assert problems["sharing.policies[0].owner"] == "no department 'nobody'"
    assert problems["sharing.policies[0].recipients"] == "no department 'ghost'"
    assert "duplicate policy id" in problems["sharing.policies[1].id"]
    assert "duplicate rule id" in problems["sharing.rules[1].id"]
    assert problems["sharing.rules[0].emit[0].department"] == "no department 'ghost'"
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_sharing(["x"])
    assert parse_sharing(None).policies == []
    with pytest.raises(ConfigError, match="neither an event type"):
        parse_sharing({"policies": [{"id": "p", "owner": "a", "types": ["Bad!"]}]})


def test_policy_version_changes_with_the_rules() -> None:
    a = PolicySet.from_config(parse_sharing(SHARING))
    b = PolicySet.from_config(parse_sharing({"policies": SHARING["policies"][:1]}))
    assert (
        a.version != b.version
        and a.version == PolicySet.from_config(parse_sharing(SHARING)).version
    )
    assert PolicySet.from_config(None).policies == ()


def test_explain_names_every_rule_and_grant(city: Any, policies: PolicySet) -> None:
    g = grant(fields=("plate",), valid_until=T0 + timedelta(hours=2))
    expired = grant(
        id="g-old", valid_from=T0 - timedelta(days=2), valid_until=T0 - timedelta(days=1)
    )
    later = grant(
        id="g-later", valid_from=T0 + timedelta(days=1), valid_until=T0 + timedelta(days=2)
    )
    revoked = grant(id="g-rev", revoked_at=T0, revoked_by="transportation")
    wrong_type = grant(id="g-type", types=("traffic.closure",))
    wrong_purpose = grant(id="g-purp", purposes=("operations",))
    orphan = grant(id="g-orphan", parent="g-gone", grantor="fire")
    unrelated = grant(id="g-unrelated", grantee="fire")
    grants = GrantSet([g, expired, later, revoked, wrong_type, wrong_purpose, orphan, unrelated])
    auth = Authorizer(policies, grants)
    index = compile_subscriptions(city.departments)
    text = explain(auth, INCIDENT, index.get("police", "spd-investigations"), NOW).text()
    assert text.startswith("ALLOW (grant) to subscription police/spd-investigations")
    assert f"grant={g.id}" in text and "fields=plate" in text
    assert (
        "traffic-for-operations (permit): not applicable, purposes ['operations'] exclude" in text
    )
    assert "parks-not-traffic (forbid): not applicable, recipients ['parks'] exclude police" in text
    assert "g-old (from transportation): expired at" in text
    assert "g-later (from transportation): not valid before" in text
    assert "g-rev (from transportation): revoked at" in text
    assert "g-type (from transportation): types ['traffic.closure'] do not cover" in text
    assert "g-purp (from transportation): purposes ['operations'] exclude" in text
    assert "g-orphan (from fire): a grant it was delegated from is revoked or gone" in text
    assert "g-unrelated" not in text

    parks = explain(auth, INCIDENT, index.get("parks", "parks-all"), NOW).text()
    assert parks.startswith("DENY (forbidden)") and "policy=parks-not-traffic" in parks
    assert "parks-not-traffic (forbid): applies, all fields" in parks

    health = explain(auth, INCIDENT, index.get("health", "health-research"), NOW).text()
    assert "default deny across departments" in health
    assert "owner is transportation" not in health

    own = explain(auth, INCIDENT, index.get("transportation", "sdot-traffic"), NOW).text()
    assert "own department" in own

    police_ops = explain(auth, INCIDENT, index.get("police", "spd-traffic"), NOW).text()
    # The permit alone would drop the plate; the operations grant g-purp widens to all fields.
    assert "policy=traffic-for-operations grant=g-purp fields=all" in police_ops

    conditional = PolicySet.from_config(
        parse_sharing(
            {
                "policies": [
                    {
                        "id": "c",
                        "owner": "transportation",
                        "types": ["traffic.*"],
                        "when": {"eq": {"data.kind": "hazard"}},
                        "fields": "*",
                    },
                    {"id": "other-owner", "owner": "police", "types": ["traffic.*"]},
                    {"id": "other-type", "owner": "transportation", "types": ["health.*"]},
                    {
                        "id": "red",
                        "owner": "transportation",
                        "effect": "forbid",
                        "types": ["traffic.*"],
                        "fields": ["plate"],
                    },
                ]
            }
        )
    )
    sub = compile_subscription(
        _dept("fire"), {"id": "f", "types": ["traffic.*"], "filter": {"exists": "data.kind"}}
    )
    text = explain(Authorizer(conditional), INCIDENT, sub, NOW).text()
    assert "policy c (permit): applies, condition false" in text
    assert "subscription filter: matches" in text
    assert "other-owner (permit): not applicable, owner is police" in text
    assert "other-type (permit): not applicable, types ['health.*'] do not match" in text
    hazard = {**INCIDENT, "data": {**INCIDENT["data"], "kind": "hazard"}}
    text = explain(Authorizer(conditional), hazard, sub, NOW).text()
    assert "condition true" in text and "redacted=plate" in text and "fields=all" in text
    wrong = explain(Authorizer(conditional), {**INCIDENT, "type": "health.emergency"}, sub, NOW)
    assert "do not match health.emergency" in wrong.text() and not wrong.decision.allow


def test_audit_rows_name_what_let_the_event_through(policies: PolicySet) -> None:
    g = grant(fields=("plate",))
    d = Authorizer(policies, GrantSet([g])).decide(INCIDENT, _sub("police", "investigation"), NOW)
    assert d.audit_row("evt-1", "police", "police-s") == [
        "evt-1",
        "police",
        "police-s",
        1,
        "grant",
        None,
        g.id,
        "investigation",
    ]
    # Non-dict data is passed through untouched (nothing to project).
    assert view({**INCIDENT, "data": None}, d)["data"] is None
