"""The `geo locate` contract, `jurisdictions publish|list|show|history|diff` and `locate`."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import numpy as np
import pytest
import shapely
import yaml
from shapely.geometry import box, mapping

from workers.cli import geo as cli_geo
from workers.cli import main
from workers.runtime import Runtime

SEATTLE = Path("/work/shared/data/seattle")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- geo locate: the contract ----------------------------------------------------------------


def test_geo_locate_writes_sorted_feature_refs_per_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layers = {"spd": "spd-precincts.geojson", "cc": "city-council-districts.geojson"}
    rng = np.random.default_rng(11)
    lats, lons = rng.uniform(47.49, 47.74, 300), rng.uniform(-122.44, -122.22, 300)
    # plus a vertex two council districts share (on the border) and a point far away
    districts = [
        shapely.geometry.shape(f["geometry"])
        for f in json.loads((SEATTLE / layers["cc"]).read_text())["features"]
    ]
    vx, vy = next(
        (x, y)
        for x, y in shapely.get_coordinates(districts[2])
        if sum(d.intersects(shapely.Point(x, y)) for d in districts) == 2
    )
    lats, lons = np.append(lats, [vy, 10.0]), np.append(lons, [vx, 10.0])
    points = tmp_path / "points.csv"
    points.write_text("lat,lon\n" + "".join(f"{a},{o}\n" for a, o in zip(lats, lons, strict=True)))
    argv = ["geo", "locate", "--points", str(points), "--resolution", "9"]
    for name, file in layers.items():
        argv += ["--layer", f"{name}={SEATTLE / file}"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    lines = out.split("\n")[:-1]
    assert len(lines) == len(lats)
    shapes = {
        name: [
            shapely.geometry.shape(f["geometry"])
            for f in json.loads((SEATTLE / file).read_text())["features"]
        ]
        for name, file in layers.items()
    }
    expected = []
    for a, o in zip(lats, lons, strict=True):
        point = shapely.Point(o, a)
        refs = [
            f"{name}#{i}"
            for name, geoms in shapes.items()
            for i, g in enumerate(geoms)
            if g.intersects(point)
        ]
        expected.append(",".join(sorted(refs)))
    assert lines == expected
    assert lines[-1] == "" and lines[-2].count("cc#") == 2  # far away; on a shared border


def test_geo_locate_reads_stdin(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    monkeypatch.setattr("sys.stdin", io.StringIO("47.6062,-122.3321\n\n"))
    code, out, _ = run(
        capsys,
        "geo",
        "locate",
        "--layer",
        f"L={SEATTLE / 'spd-precincts.geojson'}",
        "--points",
        "-",
    )
    assert code == 0 and out.startswith("L#") and out.count("\n") == 1


@pytest.mark.parametrize(
    ("points", "layer", "message"),
    [
        ("47.6,-122.3\nfoo\n", "ok", "points.csv:2: expected 'lat,lon'"),
        ("47.6,-122.3,5\n", "ok", "expected 'lat,lon'"),
        ("147.6,-122.3\n", "ok", "not a lat/lon"),
        ("47.6,-122.3\n", "bad", "expected NAME=PATH"),
        ("47.6,-122.3\n", "missing", "cannot read"),
    ],
)
def test_geo_locate_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], points: str, layer: str, message: str
) -> None:
    file = tmp_path / "points.csv"
    file.write_text(points)
    spec = {
        "ok": f"L={SEATTLE / 'ruv.geojson'}",
        "bad": "L",
        "missing": f"L={tmp_path / 'nope.geojson'}",
    }[layer]
    code, _, err = run(capsys, "geo", "locate", "--layer", spec, "--points", str(file))
    assert code == 2 and message in err


# --- jurisdictions and locate ----------------------------------------------------------------


def fc(*named: tuple[str, object]) -> str:
    features = [
        {"type": "Feature", "geometry": mapping(g), "properties": {"name": n}} for n, g in named
    ]
    return json.dumps({"type": "FeatureCollection", "features": features})


@pytest.fixture
def city(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pd.geojson").write_text(
        fc(("west", box(0, 0, 0.01, 0.01)), ("east", box(0.01, 0, 0.02, 0.01)))
    )
    (tmp_path / "new.geojson").write_text(
        fc(("west", box(0, 0, 0.015, 0.01)), ("east", box(0.015, 0, 0.02, 0.01)))
    )
    (tmp_path / "renamed.geojson").write_text(fc(("w", box(0, 0, 0.02, 0.01))))
    config = {
        "city": "test",
        "layers": {"pd": {"path": "pd.geojson", "name_property": "name"}},
        "departments": [
            {"id": "pd-west", "name": "W", "jurisdiction": [{"layer": "pd", "zones": ["west"]}]},
            {"id": "pd-east", "name": "E", "jurisdiction": [{"layer": "pd", "zones": ["east"]}]},
        ],
    }
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(config))
    redis = fakeredis.FakeRedis()
    monkeypatch.setattr(Runtime, "redis", lambda self, **kw: redis)
    monkeypatch.setenv("CITYRELAY_CONFIG", str(path))
    return tmp_path


def test_redistricting_through_the_cli(city: Path, capsys: pytest.CaptureFixture[str]) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    code, out, err = run(
        capsys,
        "jurisdictions",
        "publish",
        "--layer",
        "pd",
        str(city / "new.geojson"),
        "--effective-from",
        soon,
        "--note",
        "2027 lines",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["version"] == 1 and report["published"] is True
    assert report["coverage_change"]["transfers"][0]["from"] == "east"
    assert report["index"]["cells"] > 0

    code, out, _ = run(capsys, "jurisdictions", "list")
    assert json.loads(out) == [
        {
            "layer": "pd",
            "in_force": 0,
            "latest": 1,
            "latest_effective_from": datetime.fromisoformat(soon).isoformat(),
            "versions": 2,
        }
    ]
    code, out, _ = run(capsys, "jurisdictions", "history", "--layer", "pd")
    assert [(v["version"], v["note"]) for v in json.loads(out)] == [
        (0, "city config pd.geojson"),
        (1, "2027 lines"),
    ]
    code, out, _ = run(capsys, "jurisdictions", "show", "--layer", "pd")
    shown = json.loads(out)
    assert shown["version"] == 0 and [z["name"] for z in shown["zones"]] == ["west", "east"]
    code, out, _ = run(capsys, "jurisdictions", "show", "--layer", "pd", "--version", "1")
    assert json.loads(out)["version"] == 1
    code, out, _ = run(capsys, "jurisdictions", "diff", "--layer", "pd", "0", "1")
    assert json.loads(out)["lost_m2"].keys() == {"east"}

    # locate: now the old border holds; at the effective time the new one does
    code, out, _ = run(capsys, "locate", "--lat", "0.005", "--lon", "0.012")
    now = json.loads(out)
    assert [d["id"] for d in now["departments"]] == ["pd-east"]
    assert now["versions"] == {"pd": 0} and "version 0" in now["departments"][0]["why"][0]
    code, out, _ = run(capsys, "locate", "--lat", "0.005", "--lon", "0.012", "--at", soon)
    assert [d["id"] for d in json.loads(out)["departments"]] == ["pd-west"]
    code, out, _ = run(capsys, "locate", "--lat", "0.005", "--lon", "0.01")
    border = json.loads(out)
    assert {d["id"] for d in border["departments"]} == {"pd-west", "pd-east"}
    assert all(z["on_border"] for z in border["zones"])


def test_publish_refusals(city: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = str(city / "new.geojson")
    base = ["jurisdictions", "publish", "--layer", "pd"]
    code, _, err = run(capsys, *base, new, "--effective-from", "2020-01-01T00:00:00Z")
    assert code == 2 and "in the past" in err
    code, _, err = run(capsys, *base, new, "--effective-from", "2030-01-01T00:00:00")
    assert code == 2 and "no time zone" in err
    code, _, err = run(capsys, *base, new, "--effective-from", "tomorrow")
    assert code == 2 and "not an ISO 8601" in err
    code, _, err = run(capsys, *base, str(city / "nope.geojson"), "--effective-from", "now")
    assert code == 2 and "nope.geojson" in err
    # renaming a zone a department answers for is blocked, with the report
    code, out, _ = run(
        capsys, *base, str(city / "renamed.geojson"), "--effective-from", "2030-01-01T00:00:00Z"
    )
    assert code == 1 and "pd-west" in json.loads(out)["errors"][0]
    # a dry run stores nothing
    code, out, _ = run(capsys, *base, new, "--effective-from", "2031-01-01T00:00Z", "--dry-run")
    assert code == 0 and json.loads(out)["published"] is False
    code, out, _ = run(capsys, *base, new, "--effective-from", "2031-01-01T00:00Z")
    assert code == 0
    # effective times only move forward
    code, _, err = run(capsys, *base, new, "--effective-from", "2030-06-01T00:00Z")
    assert code == 2 and "before the latest" in err
    # a deliberate backfill is allowed for a layer published without a config
    code, out, _ = run(
        capsys,
        *["jurisdictions", "publish", "--layer", "extra", new],
        *["--effective-from", "2020-01-01T00:00Z", "--allow-past", "--name-property", "name"],
    )
    assert code == 0 and json.loads(out)["version"] == 1


def test_lookups_of_unknown_things_fail_clearly(
    city: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, message in [
        (["jurisdictions", "show", "--layer", "zz"], "unknown layer"),
        (["jurisdictions", "show", "--layer", "pd", "--version", "9"], "no version 9"),
        (["jurisdictions", "history", "--layer", "zz"], "unknown layer"),
        (["jurisdictions", "diff", "--layer", "pd", "0", "9"], "no version 9"),
        (["locate", "--lat", "99", "--lon", "0"], "not a lat/lon"),
        (["locate", "--lat", "0", "--lon", "0", "--at", "x"], "not an ISO 8601"),
    ]:
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err, argv


def test_show_when_no_version_is_in_force(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    redis = fakeredis.FakeRedis()
    monkeypatch.setattr(Runtime, "redis", lambda self, **kw: redis)
    monkeypatch.delenv("CITYRELAY_CONFIG", raising=False)
    file = tmp_path / "a.geojson"
    file.write_text(fc(("a", box(0, 0, 0.001, 0.001))))
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    code, _, _ = run(
        capsys, "jurisdictions", "publish", "--layer", "a", str(file), "--effective-from", later
    )
    assert code == 0
    code, _, err = run(capsys, "jurisdictions", "show", "--layer", "a")
    assert code == 2 and "no version in force" in err
    code, out, _ = run(capsys, "jurisdictions", "list")
    assert json.loads(out)[0]["in_force"] is None


def test_geo_config_is_taken_from_the_city_once_hooked_in() -> None:
    class WithGeo:
        geo = cli_geo.GeoConfig(resolution=12)

    assert cli_geo._geo_config(WithGeo()).resolution == 12
    assert cli_geo._geo_config(object()).resolution == 10


def test_unreachable_redis_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CITYRELAY_CONFIG", raising=False)
    with pytest.raises(SystemExit, match="cannot reach Redis at redis://127.0.0.1:1/0"):
        main(["--redis-url", "redis://127.0.0.1:1/0", "jurisdictions", "list"])
