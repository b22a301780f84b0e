"""Which ACL rules `cityrelay acl` derives where: RQ's keys and channels follow RQ's key prefix
(``rq:*`` on one Redis, ``{name}:rq:*`` on a cluster), and a city of slot groups gets users
per group that reach across groups only where its processes do (tests/integration/
test_cluster_acl.py runs the processes under them on a real cluster)."""

from __future__ import annotations

from city.config import load_city
from queues import acl
from queues.keys import Keys
from tests.conftest import SEATTLE, write_city


def _rules(users: list[acl.AclUser]) -> dict[str, list[str]]:
    return {user.name: user.rules for user in users}


def test_rq_patterns_follow_rqs_key_prefix() -> None:
    config, _ = load_city(SEATTLE)
    [(single, depts)] = acl.city_scopes(config, Keys("seattle"))
    assert depts == config.department_ids
    router = _rules(acl.city_users([(single, depts)]))["seattle.worker.router"]
    assert {"~rq:*", "&rq:*"} <= set(router) and "+cluster|slots" not in router
    [(group, _)] = acl.city_scopes(config, Keys("{seattle}"), cluster=True)
    for name, rules in _rules(acl.city_users([(group, depts)])).items():
        assert "+cluster|slots" in rules, name  # a cluster client's first question
        assert "~rq:*" not in rules and "&rq:*" not in rules, name
        if ".worker." in name and not name.endswith("steward"):
            assert {"~{seattle}:rq:*", "&{seattle}:rq:*"} <= set(rules), name


def test_slot_groups_get_users_per_group_reaching_across_only_as_their_processes_do(
    tmp_path,
) -> None:
    partitions = {
        "default": "a",
        "shards": {"a": {"prefix": "{sea-a}"}, "b": {"prefix": "{sea-b}", "departments": ["fire"]}},
    }
    config, _ = load_city(write_city(tmp_path, partitions=partitions))
    scopes = dict(
        (scope.shard, (scope, depts)) for scope, depts in acl.city_scopes(config, Keys("x"))
    )
    assert scopes["b"][1] == ["fire"] and "fire" not in scopes["a"][1]
    rules = _rules(acl.city_users(list(scopes.values())))
    assert "{sea-a}.dept.fire" not in rules and "~{sea-b}:inbox:fire" in rules["{sea-b}.dept.fire"]
    # b's routers read control data (grants) under the control group's (a's) prefix.
    assert "%R~{sea-a}:grants" in rules["{sea-b}.worker.router"]
    assert not any("{sea-b}" in r for r in rules["{sea-a}.worker.router"])
    # b's relay pulls a's outboxes for b; nothing of a's inboxes or RQ keys.
    relay_b = rules["{sea-b}.worker.relay"]
    assert {"~{sea-a}:outbox:b", "~{sea-a}:outbox:b:emergency", "~{sea-a}:stats"} <= set(relay_b)
    assert not any(r.startswith(("~{sea-a}:inbox", "~{sea-a}:rq", "&{sea-a}")) for r in relay_b)
