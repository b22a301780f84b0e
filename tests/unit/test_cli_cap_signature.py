"""`cityrelay cap parse` shows what an alert's signature is worth: on every event (the
``signature`` attribute) and, with the reason, on standard error; certificates from ``--trust``
or the city config's ``cap:`` section, whose ``require_signature`` it applies like ingest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cap_signing import Signer, make_signer, tamper
from workers.cli import main

DATA = Path(__file__).parents[1] / "data" / "cap"
IPAWS = DATA / "ipaws-5e6dd9de023f1930ef6548d9.xml"
SEATTLE = Path(__file__).parents[2] / "examples" / "seattle" / "city.yaml"


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer("CLI Test Origin")


@pytest.fixture
def files(tmp_path: Path, signer: Signer) -> dict[str, Path]:
    alert = (DATA / "v1dot2_appendix_adot1.xml").read_bytes()
    signed = signer.sign(alert)
    out = {
        "cert": signer.write_cert(tmp_path / "origin.pem"),
        "signed": tmp_path / "signed.xml",
        "tampered": tmp_path / "tampered.xml",
    }
    out["signed"].write_bytes(signed)
    out["tampered"].write_bytes(tamper(signed, "headline", "Nothing to see"))
    return out


def parse(
    capsys: pytest.CaptureFixture[str], *args: str, config: Path | None = None
) -> tuple[int, list[dict], str]:  # type: ignore[type-arg]
    code = main([*(["--config", str(config)] if config else []), "cap", "parse", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


@pytest.fixture(autouse=True)
def no_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CITYRELAY_CONFIG", raising=False)


def test_parse_shows_valid_with_trust(capsys, files) -> None:
    code, events, err = parse(capsys, str(files["signed"]), "--trust", str(files["cert"]))
    assert code == 0 and [e["signature"] for e in events] == ["valid"]
    assert f"{files['signed']}: signature valid (signed by CN=CLI Test Origin)" in err


def test_parse_shows_invalid_unverified_and_absent(capsys, files) -> None:
    code, events, err = parse(capsys, str(files["tampered"]), "--trust", str(files["cert"]))
    assert code == 0 and events[0]["signature"] == "invalid"
    assert "signature invalid: digest mismatch" in err
    code, events, err = parse(capsys, str(files["signed"]))
    assert code == 0 and events[0]["signature"] == "unverified"
    assert "signature unverified: no trusted certificate configured" in err
    code, events, err = parse(capsys, str(IPAWS), "--trust", str(files["cert"]))
    assert code == 0 and events[0]["signature"] == "unverified"
    assert "signature unverified: certificate not trusted (CN=IPAWSOPEN_200302," in err
    code, events, err = parse(capsys, str(DATA / "v1dot2_appendix_adot2.xml"))
    assert code == 0 and events[0]["signature"] == "absent" and "signature absent" in err


def test_parse_takes_the_config_certificates_and_require_signature(capsys, files, tmp_path) -> None:
    doc = yaml.safe_load(SEATTLE.read_text())
    for layer in doc["layers"].values():
        layer["path"] = str((SEATTLE.parent / layer["path"]).resolve())
    doc["cap"] = {"trusted_certificates": ["origin.pem"], "require_signature": True}
    config = tmp_path / "city.yaml"
    config.write_text(yaml.safe_dump(doc))
    code, events, err = parse(capsys, str(files["signed"]), config=config)
    assert (code, events[0]["signature"]) == (0, "valid")
    code, events, err = parse(capsys, str(IPAWS), config=config)
    assert code == 1 and events == []
    assert "cap signature unverified: certificate not trusted" in err
    assert "cap.require_signature is true" in err


def test_parse_with_a_bad_trust_file_says_which(capsys, tmp_path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("hello\n")
    code, events, err = parse(capsys, str(IPAWS), "--trust", str(bogus))
    assert code == 1 and events == []
    assert "--trust: cap.trusted_certificates[0]:" in err and "holds no PEM certificate" in err
