"""Grants in Redis (fakeredis) and the `cityrelay grant|policy|audit|acl` commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml

from city.sharing import Grant, GrantError, GrantSet, parse_sharing
from queues.audit import AuditLog
from queues.grants import GrantStore
from queues.keys import Keys
from workers import cli
from workers.cli import policy as cli_policy
from workers.runtime import Runtime

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOW = T0.timestamp()


def grant(**kw: Any) -> Grant:
    base: dict[str, Any] = dict(
        owner="transportation",
        grantee="police",
        grantor="transportation",
        types=("traffic.incident",),
        purposes=("investigation",),
        fields=("kind", "plate"),
        valid_from=T0,
        valid_until=T0 + timedelta(hours=1),
    )
    base.update(kw)
    return Grant(**base)


@pytest.fixture
def store() -> GrantStore:
    return GrantStore(fakeredis.FakeRedis(), Keys("t-grants"))


def test_create_list_and_reload_only_when_changed(store: GrantStore) -> None:
    assert store.version() == 0 and store.load().grants == {}
    g = store.create(grant(), now=NOW)
    assert store.get(g.id) == g and store.version() == 1
    first = store.load()
    assert first.version == 1 and g.id in first.grants
    assert store.load(first) is first  # one GET per batch, no reload
    store.create(grant(grantee="fire"), now=NOW)
    second = store.load(first)
    assert second is not first and len(second.grants) == 2
    assert [x.grantee for x in store.list(now=NOW)] == ["police", "fire"]  # creation order
    assert store.list(active_only=True, now=NOW + 7200) == []
    with pytest.raises(GrantError, match="no grant"):
        store.get("g-missing")


def test_create_refuses_invalid_delegation(store: GrantStore) -> None:
    root = store.create(grant(delegate_depth=1), now=NOW)
    with pytest.raises(GrantError, match="exceed"):
        store.create(
            grant(
                parent=root.id, grantor="police", grantee="fire", fields=None, types=("traffic.*",)
            ),
            now=NOW,
        )
    assert store.version() == 1  # nothing written


def test_revoke_cascades_and_is_audited(store: GrantStore) -> None:
    root = store.create(grant(delegate_depth=2), now=NOW)
    child = store.create(
        grant(parent=root.id, grantor="police", grantee="fire", delegate_depth=1), now=NOW
    )
    grand = store.create(grant(parent=child.id, grantor="fire", grantee="health"), now=NOW)
    glass = store.create(
        grant(
            owner="*",
            grantee="parks",
            grantor="parks",
            purposes=("*",),
            break_glass=True,
            reason="storm",
        ),
        now=NOW,
    )
    with pytest.raises(GrantError, match="may not revoke"):
        store.revoke(root.id, by="fire")
    with pytest.raises(GrantError, match="no grant"):
        store.revoke("g-nope", by="fire")
    assert store.revoke(root.id, by="transportation", now=NOW) == [root.id, child.id, grand.id]
    assert store.revoke(root.id, by="transportation", now=NOW) == []
    active = store.load()
    assert all(active.effective(active.grants[g.id]) is None for g in (root, child, grand))
    assert store.get(grand.id).revoked_by == "transportation"
    kinds = [r.kind for r in store.audit.records()]
    assert kinds == [
        "grant.create",
        "grant.delegate",
        "grant.delegate",
        "grant.break_glass",
        "grant.revoke",
        "grant.revoke",
    ]
    revoke = list(store.audit.records())[4]
    assert revoke.body["cascade"] == [child.id, grand.id] and revoke.actor == "transportation"
    assert store.audit.verify().ok
    assert [g.id for g in store.list(active_only=True, now=NOW)] == [glass.id]


# --- the CLI --------------------------------------------------------------------------------

CITY = {
    "city": "testville",
    "layers": {"precincts": {"path": "precincts.geojson"}},
    "departments": [
        {
            "id": "transportation",
            "name": "SDOT",
            "jurisdiction": [{"layer": "precincts"}],
            "subscriptions": [{"id": "sdot", "types": ["traffic.*"]}],
        },
        {
            "id": "police",
            "name": "SPD",
            "jurisdiction": [{"layer": "precincts"}],
            "subscriptions": [
                {"id": "spd-ops", "types": ["traffic.*"]},
                {"id": "spd-inv", "types": ["traffic.*"], "purpose": "investigation"},
            ],
        },
        {"id": "fire", "name": "SFD", "jurisdiction": [{"layer": "precincts"}]},
    ],
}
SHARING = {
    "policies": [
        {
            "id": "ops",
            "owner": "transportation",
            "types": ["traffic.*"],
            "purposes": ["operations"],
            "fields": ["kind", "severity"],
        }
    ]
}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    server = fakeredis.FakeServer()
    config = tmp_path / "city.yaml"
    config.write_text(yaml.safe_dump(CITY))
    monkeypatch.setattr(Runtime, "redis", lambda self, **kw: fakeredis.FakeRedis(server=server))
    real_sharing = cli_policy._sharing

    def with_sharing(runtime: Runtime) -> Any:
        city, _ = real_sharing(runtime)
        return city, parse_sharing(SHARING)

    monkeypatch.setattr(cli_policy, "_sharing", with_sharing)
    return {"config": str(config), "server": server, "tmp": tmp_path}


def run(env: dict[str, Any], *argv: str) -> int:
    return cli.main(["--config", env["config"], "--prefix", "t-cli", *argv])


def test_grant_cli_round_trip(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(
            env,
            "grant",
            "create",
            "--owner",
            "transportation",
            "--to",
            "police",
            "--type",
            "traffic.incident",
            "--purpose",
            "investigation",
            "--fields",
            "kind,plate",
            "--for",
            "2h",
            "--delegate-depth",
            "1",
        )
        == 0
    )
    root = capsys.readouterr().out.strip()
    assert root.startswith("g-")
    assert (
        run(
            env,
            "grant",
            "create",
            "--parent",
            root,
            "--to",
            "fire",
            "--by",
            "police",
            "--type",
            "traffic.incident",
            "--purpose",
            "investigation",
            "--fields",
            "plate",
            "--for",
            "1h",
        )
        == 0
    )
    child = capsys.readouterr().out.strip()
    assert (
        run(
            env,
            "grant",
            "create",
            "--to",
            "fire",
            "--break-glass",
            "--reason",
            "bridge collapse",
            "--type",
            "traffic.*",
            "--for",
            "30m",
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "BREAK-GLASS declared by fire" in captured.err
    assert run(env, "grant", "list") == 0
    listing = capsys.readouterr().out
    assert f"{root} active" in listing and f"parent={root}" in listing
    assert "BREAK-GLASS" in listing and "fields=*" in listing
    assert run(env, "grant", "list", "--json", "--active") == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert run(env, "grant", "revoke", root, "--by", "transportation") == 0
    assert capsys.readouterr().out.split() == ["revoked", root, "revoked", child]
    assert run(env, "grant", "revoke", root, "--by", "transportation") == 0
    assert "already revoked" in capsys.readouterr().out
    assert run(env, "grant", "list") == 0
    assert f"{root} revoked" in capsys.readouterr().out
    assert run(env, "audit", "verify") == 0
    assert "audit chain OK: 5 records" in capsys.readouterr().out


def test_grant_cli_states_and_refusals(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert (
        run(
            env,
            "grant",
            "create",
            "--owner",
            "transportation",
            "--to",
            "police",
            "--type",
            "traffic.incident",
            "--purpose",
            "investigation",
            "--from",
            later,
            "--for",
            "1h",
        )
        == 0
    )
    past_from, past_until = "2020-01-01T00:00:00Z", "2020-01-02T00:00:00+00:00"
    assert (
        run(
            env,
            "grant",
            "create",
            "--owner",
            "transportation",
            "--to",
            "police",
            "--type",
            "traffic.incident",
            "--purpose",
            "investigation",
            "--from",
            past_from,
            "--until",
            past_until,
        )
        == 0
    )
    capsys.readouterr()
    assert run(env, "grant", "list") == 0
    out = capsys.readouterr().out
    assert "pending" in out and "expired" in out
    # refusals: missing owner, missing purpose, invalid model, bad delegation, bad revoke
    assert (
        run(
            env,
            "grant",
            "create",
            "--to",
            "police",
            "--type",
            "traffic.incident",
            "--purpose",
            "x",
            "--for",
            "1h",
        )
        == 2
    )
    assert (
        run(
            env,
            "grant",
            "create",
            "--owner",
            "transportation",
            "--to",
            "police",
            "--type",
            "traffic.incident",
            "--for",
            "1h",
        )
        == 2
    )
    assert (
        run(
            env,
            "grant",
            "create",
            "--owner",
            "transportation",
            "--to",
            "police",
            "--type",
            "Traffic",
            "--purpose",
            "investigation",
            "--for",
            "1h",
        )
        == 2
    )
    assert (
        run(
            env,
            "grant",
            "create",
            "--owner",
            "transportation",
            "--to",
            "police",
            "--by",
            "police",
            "--type",
            "traffic.incident",
            "--purpose",
            "investigation",
            "--for",
            "1h",
        )
        == 2
    )
    assert run(env, "grant", "revoke", "g-nothing", "--by", "police") == 2
    err = capsys.readouterr().err
    assert "--owner is required" in err and "at least one --purpose" in err
    assert "grant create: types" in err and "refused: only transportation" in err
    assert "grant revoke: no grant g-nothing" in err
    for bad in (["--for", "2 weeks"], ["--until", "yesterday"], ["--until", "2026-01-01T00:00"]):
        with pytest.raises(SystemExit):
            run(
                env,
                "grant",
                "create",
                "--owner",
                "transportation",
                "--to",
                "police",
                "--type",
                "traffic.incident",
                "--purpose",
                "x",
                *bad,
            )


def test_policy_explain_cli(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    event = env["tmp"] / "incident.json"
    event.write_text(
        json.dumps(
            {
                "id": "e-1",
                "source": "/city/transportation",
                "type": "traffic.incident",
                "time": "2026-11-25T12:00:00Z",
                "department": "transportation",
                "data": {"kind": "collision", "severity": 3, "plate": "XYZ"},
            }
        )
    )
    assert run(env, "policy", "explain", "--event", str(event), "--dept", "police") == 0
    out = capsys.readouterr().out
    assert "ALLOW (policy) to subscription police/spd-ops" in out
    assert "DENY (no-permit) to subscription police/spd-inv" in out
    assert (
        run(
            env,
            "policy",
            "explain",
            "--event",
            str(event),
            "--dept",
            "police",
            "--sub",
            "spd-inv",
            "--at",
            "2026-11-25T12:00:00Z",
        )
        == 0
    )
    assert "spd-ops" not in capsys.readouterr().out
    assert run(env, "policy", "explain", "--event", str(event), "--dept", "fire") == 2
    assert "no such subscription" in capsys.readouterr().err
    bad = env["tmp"] / "bad.json"
    bad.write_text("{}")
    assert run(env, "policy", "explain", "--event", str(bad), "--dept", "police") == 2
    assert run(env, "policy", "explain", "--event", "/nonexistent.json", "--dept", "x") == 2


def test_audit_verify_cli_reports_tampering(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    log = AuditLog(fakeredis.FakeRedis(server=env["server"]), Keys("t-cli"))
    for i in range(3):
        log.append("grant.create", {"i": i}, "transportation")
    second = list(log.read())[1][0]
    log.redis.xdel(log.keys.audit, second)
    assert run(env, "audit", "verify") == 1
    out = capsys.readouterr().out
    assert "PROBLEM" in out and "audit chain BROKEN" in out


def test_acl_show_cli(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    secrets = env["tmp"] / "secrets.json"
    secrets.write_text(json.dumps({"t-cli.dept.police": "pw"}))
    assert run(env, "acl", "show", "--secrets", str(secrets)) == 0
    out = capsys.readouterr().out
    assert "user t-cli.dept.police reset on #" in out
    assert "user t-cli.dept.fire reset on <password>" in out
    assert "(+xadd ~t-cli:ingest:police ~t-cli:ingest:police:emergency)" in out
    assert "user t-cli.worker.router" in out
    secrets.write_text("[1]")
    with pytest.raises(SystemExit, match="expected a JSON object"):
        run(env, "acl", "show", "--secrets", str(secrets))


def test_grant_set_is_reusable_across_versions() -> None:
    assert GrantSet([], version=3).version == 3


def test_audit_trace_explains_a_past_delivery(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from city.audit import delivery_body

    log = AuditLog(fakeredis.FakeRedis(server=env["server"]), Keys("t-cli"))
    rows = [
        ["e-1", "police", "spd-inv", 1, "grant", None, "g-7", "investigation"],
        ["e-1", "parks", "parks-all", 0, "forbidden", "parks-not-traffic", None, "operations"],
        ["e-2", "fire", "sfd", 1, "policy", "ops", None, "operations"],
    ]
    log.append("grant.create", {"grant": "g-7"}, "transportation")
    log.append("delivery", delivery_body("b-1", rows, "pv1", 3, "j2"), "router")
    assert run(env, "audit", "trace", "e-1") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert "police/spd-inv delivered purpose=investigation policy=None grant=g-7" in out[0]
    assert "policy_version=pv1 grant_version=3 jurisdiction_version=j2" in out[0]
    assert "parks/parks-all refused (forbidden)" in out[1]
    assert run(env, "audit", "trace", "e-404") == 1
    assert "no delivery of e-404" in capsys.readouterr().out
