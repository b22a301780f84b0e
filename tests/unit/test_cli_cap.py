"""`cityrelay cap parse` / `cap render`: what an operator types, what they see."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import xmlschema

from workers.cli import main

DATA = Path(__file__).parents[1] / "data" / "cap"
SCHEMA = xmlschema.XMLSchema(str(Path(__file__).parents[2] / "city" / "data" / "cap12.xsd"))


def test_parse_prints_one_json_event_per_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["cap", "parse", str(DATA / "v1dot2_appendix_adot4.xml"), "--department", "spd"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["type"] for e in events] == ["cap.rescue", "cap.rescue"]
    assert all(e["priority"] == "emergency" and e["department"] == "spd" for e in events)
    assert events[1]["data"]["event"] == "Abducción de Niño"


def test_parse_then_render_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        sys,
        "stdin",
        io.TextIOWrapper(io.BytesIO((DATA / "v1dot2_appendix_adot2.xml").read_bytes())),
    )
    assert main(["cap", "parse", "-"]) == 0
    event_file = tmp_path / "event.json"
    event_file.write_text(capsys.readouterr().out)
    assert (
        main(
            [
                "cap",
                "render",
                str(event_file),
                "--sender",
                "oem@seattle.gov",
                "--status",
                "Exercise",
            ]
        )
        == 0
    )
    xml = capsys.readouterr().out
    SCHEMA.validate(xml)
    assert "<sender>oem@seattle.gov</sender>" in xml and "<status>Exercise</status>" in xml


def test_render_accepts_pretty_printed_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = {
        "id": "e1",
        "source": "/city/fire",
        "type": "safety.dispatch",
        "time": "2026-11-25T10:00:00Z",
        "priority": "emergency",
        "location": {"lat": 47.6, "lon": -122.3},
        "data": {"nature": "fire"},
    }
    path = tmp_path / "e.json"
    path.write_text(json.dumps(event, indent=2))
    assert main(["cap", "render", str(path)]) == 0
    SCHEMA.validate(capsys.readouterr().out)


def test_invalid_cap_exits_non_zero_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text((DATA / "v1dot2_appendix_adot1.xml").read_text().replace("Severe", "Awful"))
    assert main(["cap", "parse", str(bad)]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "not valid CAP 1.2" in out.err and "severity" in out.err
    assert main(["cap", "parse", str(tmp_path / "missing.xml")]) == 1
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "Expecting value"),
        ("[1, 2]", "one JSON object"),
        ('{"id": "e1"}', "validation error"),
        ('{"id":"e1","source":"/cap/x","type":"cap.met","time":"2026-11-25T10:00:00Z","data":{"a":1}}',
         "not a CAP payload"),
    ],
)  # fmt: skip
def test_render_refuses_bad_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "e.json"
    path.write_text(content)
    assert main(["cap", "render", str(path)]) == 1
    assert message in capsys.readouterr().err


def test_render_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cap", "render", str(tmp_path / "nope.json")]) == 1
    assert "cannot read" in capsys.readouterr().err
