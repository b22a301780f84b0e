"""`cityrelay pia|consent|opendata|privacy keys` as an operator uses them (fakeredis)."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
import yaml

from city.config import load_city
from jobs.privacy_stage import PrivacyStage
from queues.keys import Keys
from tests.privacy_city import city_doc, incident, keyring, write_keys
from workers.cli import main
from workers.runtime import Runtime

FIELDS = {
    "plate": "direct",
    "description": "sensitive",
    "road": "quasi",
    "kind": "public",
    "severity": "public",
    "lanes_blocked": "public",
}


@pytest.fixture
def env(tmp_path, monkeypatch):
    server = fakeredis.FakeServer()
    monkeypatch.setattr(
        Runtime, "redis", lambda self, **kw: fakeredis.FakeRedis(server=server, **kw)
    )
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(city_doc()))
    write_keys(tmp_path / "keys.json")

    def run(*args: str) -> int:
        return main(["--prefix", "tcli", "--config", str(path), *args])

    run.redis = fakeredis.FakeRedis(server=server)  # type: ignore[attr-defined]
    run.dir = tmp_path  # type: ignore[attr-defined]
    run.path = path  # type: ignore[attr-defined]
    return run


def write_pia(tmp_path, **changes) -> str:
    doc = {
        "department": "cameras",
        "type": "traffic.incident",
        "description": "camera incidents",
        "purposes": ["investigation", "operations"],
        "fields": FIELDS,
        "recipients": ["police", "transport", "transit", "parks"],
        "lawful_basis": "public_task",
        **changes,
    }
    path = tmp_path / "pia.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_pia_submit_approve_show_list(env, capsys) -> None:
    assert env("pia", "submit", "--file", write_pia(env.dir, recipients=["police"])) == 0
    out = capsys.readouterr().out
    assert "awaiting approval" in out and "unlisted-recipient" in out
    # High risks block approval until mitigated or accepted.
    assert (
        env("pia", "approve", "cameras/traffic.incident", "--reviewer", "dpo", "--for", "90d") == 1
    )
    assert "unlisted-recipient" in capsys.readouterr().err
    assert env("pia", "show", "cameras/traffic.incident") == 0
    assert "risk [high] unlisted-recipient" in capsys.readouterr().out
    assert env("pia", "submit", "--file", write_pia(env.dir)) == 0
    capsys.readouterr()
    code = env("pia", "approve", "cameras/traffic.incident", "--reviewer", "dpo", "--for", "90d")
    assert code == 0 and "approved cameras/traffic.incident" in capsys.readouterr().out
    assert env("pia", "show", "cameras/traffic.incident", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["effective_status"] == "approved" and shown["approved_by"] == "dpo"
    assert env("pia", "show", "cameras/traffic.incident") == 0
    assert "approved (stored: approved, revision 2)" in capsys.readouterr().out
    assert env("pia", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "approved"
    assert env("pia", "list") == 0
    assert "cameras/traffic.incident" in capsys.readouterr().out
    # The router admits the integration now.
    stage = PrivacyStage.for_config(load_city(env.path)[0], Keys("tcli"), keyring=keyring())
    assert stage.admit(env.redis, [incident()])[1] == []
    assert env("pia", "reject", "cameras/traffic.incident", "--reviewer", "dpo") == 0
    assert stage.admit(env.redis, [incident()])[1][0][1] == "pia-rejected"


def test_pia_errors(env, capsys, tmp_path) -> None:
    assert env("pia", "show", "x/y") == 1 and "no PIA" in capsys.readouterr().err
    assert env("pia", "approve", "x/y", "--reviewer", "a", "--for", "1d") == 1
    assert env("pia", "reject", "x/y", "--reviewer", "a") == 1
    capsys.readouterr()
    with pytest.raises(SystemExit, match="DEPT/TYPE"):
        env("pia", "show", "nodash")
    assert env("pia", "submit", "--file", str(tmp_path / "none.yaml")) == 2
    assert "cannot read" in capsys.readouterr().err
    assert env("pia", "submit", "--file", write_pia(tmp_path, lawful_basis="whim")) == 2
    assert "lawful_basis" in capsys.readouterr().err
    assert env("pia", "submit", "--file", write_pia(tmp_path, department="ghosts")) == 2
    assert "no department 'ghosts'" in capsys.readouterr().err
    env("pia", "submit", "--file", write_pia(tmp_path))
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert (
        env("pia", "approve", "cameras/traffic.incident", "--reviewer", "a", "--review-date", past)
        == 1
    )
    assert "future" in capsys.readouterr().err


def test_consent_give_withdraw_show(env, capsys) -> None:
    assert env("consent", "give", "--kind", "plate", "--subject", "abc-123", "--purpose",
               "trip-alerts", "--type", "traffic.incident") == 0  # fmt: skip
    given = json.loads(capsys.readouterr().out)
    assert given["event"]["type"] == "given" and given["sensitive"] is True
    assert given["piiPrincipalId"].startswith("c") and "ABC" not in json.dumps(given)
    assert sorted(given["services"][0]["purposes"][0]["piiCategory"]) == [
        "description",
        "plate",
        "road",
    ]
    assert env("consent", "withdraw", "--kind", "plate", "--subject", "ABC123", "--purpose",
               "trip-alerts") == 0  # fmt: skip
    withdrawn = json.loads(capsys.readouterr().out)
    assert withdrawn["piiPrincipalId"] == given["piiPrincipalId"]  # same citizen
    assert withdrawn["services"][0]["purposes"][0]["piiCategory"] == ["plate"]
    assert env("consent", "show", "--kind", "plate", "--subject", "ABC123") == 0
    assert json.loads(capsys.readouterr().out)["purposes"] == {"trip-alerts": "withdrawn"}


def test_consent_needs_a_key(env, capsys) -> None:
    (env.dir / "keys.json").write_text(json.dumps({"domains": {}}))
    with pytest.raises(SystemExit, match="no consent key"):
        env("consent", "show", "--kind", "plate", "--subject", "A")


def test_opendata_reads_the_hot_tier_and_releases_no_plate(env, capsys) -> None:
    keys = Keys("tcli")
    base = datetime(2026, 11, 25, 10, tzinfo=UTC)
    for i in range(30):
        when = base + timedelta(minutes=i)
        event = incident(f"e-{i}", plate=f"P{i}", time=when.strftime("%Y-%m-%dT%H:%M:%SZ"))
        # The hot tier's entry id is the routing time, close to the event time.
        entry_id = f"{int(when.timestamp() * 1000)}-1"
        env.redis.xadd(keys.hot("traffic.incident"), {"e": json.dumps(event)}, id=entry_id)
    outside = incident("late", time="2026-11-27T10:00:00Z")
    late_id = f"{int(datetime(2026, 11, 27, 10, tzinfo=UTC).timestamp() * 1000)}-1"
    env.redis.xadd(keys.hot("traffic.incident"), {"e": json.dumps(outside)}, id=late_id)
    args = ["opendata", "--type", "traffic.incident", "--from", "2026-11-25T00:00Z",
            "--to", "2026-11-26T00:00Z"]  # fmt: skip
    assert env(*args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["meta"]["events"] == 30 and out["meta"]["k"] == 3
    assert sum(r["count"] for r in out["rows"]) == 30
    assert "P1" not in json.dumps(out)
    assert env(*args, "--epsilon", "1.0", "--k", "5", "--bucket", "2h", "--resolution", "8") == 0
    noisy = json.loads(capsys.readouterr().out)
    assert noisy["meta"]["epsilon"] == 1.0 and noisy["meta"]["bucket_seconds"] == 7200
    target = env.dir / "records.json"
    assert env(*args, "--records", "--out", str(target)) == 0
    assert "rows to" in capsys.readouterr().out
    records = json.loads(target.read_text())
    assert records["rows"] and all("plate" not in r for r in records["rows"])
    assert env(*args, "--k", "1") == 2
    assert env(*args, "--bucket", "soon") == 2
    other = ["opendata", "--type", "environment.air_quality", "--from", "2026-11-25T00:00Z",
             "--to", "2026-11-26T00:00Z", "--records"]  # fmt: skip
    assert env(*other) == 2 and "declares no" in capsys.readouterr().err


def test_opendata_pages_through_long_streams(env, capsys, monkeypatch) -> None:
    import workers.cli.opendata as cli

    monkeypatch.setattr(cli, "PAGE", 4)
    keys = Keys("tcli")
    start = datetime(2026, 11, 25, tzinfo=UTC)
    routed_ms = int(start.timestamp() * 1000) + 10 * 3600 * 1000
    for i in range(10):
        event = json.dumps(incident(f"e-{i}"))
        env.redis.xadd(keys.hot("traffic.incident"), {"e": event}, id=f"{routed_ms}-{i + 1}")
    runtime = Runtime("redis://x", "tcli", env.path)
    assert len(cli.read_hot(runtime, "traffic.incident", start, start + timedelta(days=1))) == 10


def test_privacy_keys_ensure_and_drop(env, capsys) -> None:
    (env.dir / "keys.json").unlink()
    assert env("privacy", "keys", "--ensure", "--periods", "2026-11") == 0
    out = capsys.readouterr().out
    assert "created consent" in out and "created alerts/2026-11/" in out
    path = env.dir / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "2026-11" in json.loads(path.read_text())["domains"]["police"]
    assert env("privacy", "keys", "--ensure") == 0  # this period and the next
    assert env("privacy", "keys", "--drop-period", "2026-11") == 0
    assert "unlinkable" in capsys.readouterr().out
    assert "2026-11" not in json.loads(path.read_text())["domains"]["police"]


def test_privacy_keys_needs_a_location_and_a_section(env, capsys, tmp_path, monkeypatch) -> None:
    doc = city_doc()
    doc["privacy"]["keys"] = {"env": "NO_SUCH_VAR"}
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    env.path.write_text(yaml.safe_dump(doc))
    assert env("privacy", "keys", "--ensure") == 2 and "NO_SUCH_VAR" in capsys.readouterr().err
    env.path.write_text(yaml.safe_dump(city_doc(privacy=None)))
    with pytest.raises(SystemExit, match="no privacy: section"):
        env("pia", "list")
