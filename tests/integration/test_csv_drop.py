"""`cityrelay publish --dept D --csv FILE` on a real Redis: rows mapped by the department's
``csv:`` config, bad rows dead-lettered with their line number, a re-run (or a grown nightly
file) publishing nothing twice."""

from __future__ import annotations

import json

import pytest

from tests.connector_support import department, write_connector_city
from workers.cli import main

TMS = {
    "type": "traffic.incident",
    "columns": {
        "id": "incident_no",
        "time": "reported_at",
        "lat": "latitude",
        "lon": "longitude",
        "data": {"kind": "kind", "severity": "severity", "road": "road"},
    },
}
METERS = {  # no id column: ids from the row's content
    "type": "utility.meter_alarm",
    "delimiter": ";",
    "columns": {"lat": "y", "lon": "x",
                "data": {"meter_id": "meter", "utility": "utility", "alarm": "alarm"}},
}  # fmt: skip

INCIDENTS = """incident_no,reported_at,latitude,longitude,kind,severity,road
T-1,2026-12-06T22:00:00Z,47.6205,-122.3493,collision,3,Mercer St
T-2,2026-12-06T22:05:00Z,47.6101,-122.3421,hazard,1,
T-3,2026-12-06T22:07:00Z,47.6101,-122.3421,meteor,2,Pine St
T-4,2026-12-06T22:09:00Z,47.6101,-122.3421,closure,4,"Broad St, north"
T-5,2026-12-06T22:10:00Z,,-122.3421,hazard,2,
T-6,2026-12-06T22:11:00Z,47.6150,-122.3300,congestion,2,I-5
T-7,yesterday,47.6150,-122.3300,congestion,2,I-5
"""


@pytest.fixture
def city(tmp_path):
    def edit(doc):
        department(doc, "sdot")["csv"] = [TMS]
        department(doc, "spu-water")["csv"] = [METERS]

    return write_connector_city(tmp_path, edit)


def _run(redis_url, keys, city, monkeypatch, capsys, *args: str) -> tuple[int, dict]:
    monkeypatch.setenv("REDIS_URL", redis_url)
    code = main(["--prefix", keys.prefix, "--config", str(city), "publish", *args])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.integration
def test_csv_rows_published_bad_rows_dead_lettered_rerun_publishes_nothing_twice(
    redis_url, redis, keys, city, tmp_path, monkeypatch, capsys
):
    path = tmp_path / "tms-nightly.csv"
    path.write_text(INCIDENTS)
    code, report = _run(redis_url, keys, city, monkeypatch, capsys, "--dept", "sdot",
                        "--csv", str(path))  # fmt: skip
    assert code == 1  # some rows were refused
    assert report == {"rows": 7, "published": 4, "already_published": 0, "dead_lettered": 3}
    events = [json.loads(f[b"e"]) for _, f in redis.xrange(keys.ingest("sdot"))]
    assert len(events) == 4 and all(e["id"].startswith("csv-") for e in events)
    closure = next(e for e in events if e["data"]["kind"] == "closure")
    assert closure["data"] == {"kind": "closure", "severity": 4, "road": "Broad St, north"}
    assert closure["location"] == {"lat": 47.6101, "lon": -122.3421}
    dead = {int(f[b"line"]): f for _, f in redis.xrange(keys.deadletter)}
    assert sorted(dead) == [4, 6, 8]
    assert dead[4][b"reason"] == b"invalid_payload" and dead[6][b"reason"] == b"unmappable"
    assert dead[8][b"reason"] == b"invalid_envelope"
    assert all(f[b"file"] == b"tms-nightly.csv" and f[b"stage"] == b"csv" for f in dead.values())
    assert json.loads(dead[4][b"body"])["kind"] == "meteor"

    code, again = _run(redis_url, keys, city, monkeypatch, capsys, "--dept", "sdot",
                       "--csv", str(path))  # fmt: skip
    assert again["published"] == 0 and again["already_published"] == 4
    assert redis.xlen(keys.ingest("sdot")) == 4  # nothing twice


@pytest.mark.integration
def test_csv_without_an_id_column_a_grown_file_publishes_only_its_new_rows(
    redis_url, redis, keys, city, tmp_path, monkeypatch, capsys
):
    path = tmp_path / "alarms.csv"
    rows = ["meter;utility;alarm;y;x", "m-1;water;leak;47.61;-122.33",
            "m-2;water;overflow;47.62;-122.34"]  # fmt: skip
    path.write_text("\n".join(rows) + "\n")
    args = ("--dept", "spu-water", "--csv", str(path))
    assert _run(redis_url, keys, city, monkeypatch, capsys, *args) == (
        0, {"rows": 2, "published": 2, "already_published": 0, "dead_lettered": 0})  # fmt: skip
    path.write_text("\n".join([*rows, "m-3;water;leak;47.63;-122.35"]) + "\n")
    code, report = _run(redis_url, keys, city, monkeypatch, capsys, *args)
    assert code == 0 and report["published"] == 1 and report["already_published"] == 2
    ids = [json.loads(f[b"e"])["id"] for _, f in redis.xrange(keys.ingest("spu-water"))]
    assert len(ids) == len(set(ids)) == 3


@pytest.mark.integration
def test_csv_needs_a_mapping(redis_url, keys, city, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", redis_url)
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    code = main(["--prefix", keys.prefix, "--config", str(city), "publish", "--dept", "fire",
                 "--csv", str(path)])  # fmt: skip
    assert code == 2 and "csv: mappings" in capsys.readouterr().err
