"""XML-DSig signatures on CAP alerts (city/cap/signature.py): an alert signed here with a key
made here is valid when its certificate is trusted, invalid once tampered with, unverified when
the certificate is not trusted (or nothing is), and the real sample alerts are still accepted as
CAP, each with its result; `cap.require_signature` refuses all but valid ones; the config's
certificates are checked when the config loads."""

from __future__ import annotations

import base64
import re
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from city.cap import (
    CapError,
    CapTrust,
    SignatureStatus,
    events_and_signature,
    events_from_cap,
    load_certificates,
)
from city.config import ConfigError, load_city
from tests.cap_signing import Signer, make_signer, tamper

DATA = Path(__file__).parents[1] / "data" / "cap"
SHARED = Path(__file__).parents[3] / "shared" / "data" / "cap"  # ../shared next to the repo
SAMPLES = SHARED if SHARED.is_dir() else DATA
IPAWS = "ipaws-5e6dd9de023f1930ef6548d9.xml"
ALERT = (DATA / "v1dot2_appendix_adot1.xml").read_bytes()  # one info: headline, severity
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
VALID, INVALID, UNVERIFIED, ABSENT = (
    SignatureStatus.VALID,
    SignatureStatus.INVALID,
    SignatureStatus.UNVERIFIED,
    SignatureStatus.ABSENT,
)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer("Test Alert Origin")


@pytest.fixture(scope="module")
def stranger() -> Signer:
    return make_signer("Someone Else")


@pytest.fixture(scope="module")
def signed(signer: Signer) -> bytes:
    return signer.sign(ALERT)


def result(xml: bytes, *certs: x509.Certificate, **kw):  # type: ignore[no-untyped-def]
    events, signature = events_and_signature(xml, trust=CapTrust(tuple(certs), **kw))
    assert {e.model_extra["signature"] for e in events} == {str(signature.status)}  # type: ignore[index]
    return signature


def ipaws_certificate() -> x509.Certificate:
    xml = (DATA / IPAWS).read_bytes()
    match = re.search(rb"<ds:X509Certificate>(.*?)</ds:X509Certificate>", xml)
    assert match
    return x509.load_der_x509_certificate(base64.b64decode(match.group(1)))


# -- the four results ------------------------------------------------------------------------
def test_an_alert_signed_here_verifies_with_its_certificate_trusted(signed, signer) -> None:
    signature = result(signed, signer.cert)
    assert signature.status is VALID and signature.signer == "CN=Test Alert Origin"
    (event,) = events_from_cap(signed, trust=CapTrust((signer.cert,)))
    assert event.to_wire()["signature"] == "valid"
    # the content is the alert's, as unsigned: the signature element itself is not content
    (plain,) = events_from_cap(ALERT)
    assert event.data == plain.data and event.id == plain.id


@pytest.mark.parametrize(
    ("element", "value"), [("headline", "ALL CLEAR, go home"), ("severity", "Minor")]
)
def test_the_same_alert_tampered_with_is_invalid(signed, signer, element, value) -> None:
    tampered = tamper(signed, element, value)
    signature = result(tampered, signer.cert)
    assert signature.status is INVALID and "digest mismatch" in signature.detail
    # still CAP: the tampered content is what the event says, flagged invalid
    (event,) = events_from_cap(tampered, trust=CapTrust((signer.cert,)))
    assert event.model_extra["signature"] == "invalid"  # type: ignore[index]


def test_a_changed_signature_value_is_invalid(signed, signer) -> None:
    value = re.search(rb"<ds:SignatureValue>([^<]*)</ds:SignatureValue>", signed)
    assert value
    raw = base64.b64decode(value.group(1))
    forged = base64.b64encode(bytes([raw[0] ^ 1]) + raw[1:])
    changed = signed.replace(value.group(1), forged)
    signature = result(changed, signer.cert)
    assert signature.status is INVALID and "signature value does not verify" in signature.detail


def test_signed_but_certificate_not_trusted_is_unverified(signed, stranger) -> None:
    signature = result(signed, stranger.cert)
    assert signature.status is UNVERIFIED
    assert signature.detail == "certificate not trusted (CN=Test Alert Origin)"


def test_signed_with_nothing_trusted_is_unverified(signed) -> None:
    signature = result(signed)
    assert (signature.status, signature.detail) == (UNVERIFIED, "no trusted certificate configured")


def test_no_signature_is_absent(signer) -> None:
    assert result(ALERT, signer.cert).status is ABSENT


def test_a_trusted_certificate_outside_its_validity_is_unverified(signer) -> None:
    old = make_signer("Old Origin", not_before=datetime.now(UTC) - timedelta(days=400), days=30)
    signature = result(old.sign(ALERT), old.cert)
    assert signature.status is UNVERIFIED and "expired on" in signature.detail


# -- the sample alerts -----------------------------------------------------------------------
SAMPLE_RESULTS = {
    IPAWS: UNVERIFIED,  # signed by FEMA IPAWS; no certificate of ours is trusted
    "nws-5c2cf27b1f56885d61654dc47fa411d5.xml": ABSENT,
    "v1dot2_appendix_adot1.xml": ABSENT,
    "v1dot2_appendix_adot2.xml": ABSENT,
    "v1dot2_appendix_adot3.xml": ABSENT,
    "v1dot2_appendix_adot4.xml": ABSENT,
}


def test_every_sample_alert_is_accepted_with_its_result(signer) -> None:
    assert sorted(p.name for p in SAMPLES.glob("*.xml")) == sorted(SAMPLE_RESULTS)
    for path in sorted(SAMPLES.glob("*.xml")):
        signature = result(path.read_bytes(), signer.cert)  # require_signature false
        assert signature.status is SAMPLE_RESULTS[path.name], path.name
    ipaws = result((SAMPLES / IPAWS).read_bytes(), signer.cert)
    assert ipaws.detail.startswith("certificate not trusted (CN=IPAWSOPEN_200302,")


def test_the_ipaws_signature_is_real_it_verifies_at_its_time_with_its_certificate() -> None:
    """Trusting the IPAWS certificate itself: expired since 2022, so unverified today; at the
    time the alert was sent it verifies (signxml on a real-world signature), and a changed
    msgType breaks it."""
    xml = (SAMPLES / IPAWS).read_bytes()
    cert = ipaws_certificate()
    expired = result(xml, cert)
    assert expired.status is UNVERIFIED and "expired on 2022-03-04" in expired.detail
    then = datetime(2019, 4, 19, 18, 0, tzinfo=UTC)
    assert result(xml, cert, verification_time=then).status is VALID
    changed = xml.replace(b"<msgType>Cancel</msgType>", b"<msgType>Update</msgType>")
    assert result(changed, cert, verification_time=then).status is INVALID


def _without(xml: bytes, pattern: bytes) -> bytes:
    changed, count = re.subn(pattern, b"", xml, flags=re.S)
    assert count == 1
    return changed


@pytest.mark.parametrize(
    ("pattern", "detail"),
    [
        (
            rb"<ds:SignatureValue>.*?</ds:SignatureValue>",
            "incomplete signature: no <SignatureValue>",
        ),
        (rb"<ds:SignedInfo>.*?</ds:SignedInfo>", "incomplete signature: no <SignedInfo>"),
        (rb"<ds:DigestValue>.*?</ds:DigestValue>", "incomplete signature: no <DigestValue>"),
        (rb"<ds:KeyInfo>.*?</ds:KeyInfo>", "no <X509Certificate>"),
    ],
)
def test_an_incomplete_ipaws_signature_is_unverified_not_invalid_cap(pattern, detail) -> None:
    """Before, the CAP schema's lax xmldsig <any> validated such a signature strictly and the
    alert was refused as not valid CAP 1.2; now its content is validated without it."""
    xml = _without((SAMPLES / IPAWS).read_bytes(), pattern)
    signature = result(
        xml, ipaws_certificate(), verification_time=datetime(2019, 4, 19, tzinfo=UTC)
    )
    assert signature.status is UNVERIFIED and detail in signature.detail
    empty = re.sub(
        rb"<ds:Signature .*</ds:Signature>",
        f'<ds:Signature xmlns:ds="{DSIG_NS}"/>'.encode(),
        (SAMPLES / IPAWS).read_bytes(),
        flags=re.S,
    )
    assert result(empty).detail == "incomplete signature: no <SignedInfo>"


def test_the_cap_content_is_still_validated_without_the_signature(signed, signer) -> None:
    broken = tamper(signed, "severity", "Catastrophic")
    with pytest.raises(CapError, match="not valid CAP 1.2") as refused:
        events_from_cap(broken, trust=CapTrust((signer.cert,)))
    assert refused.value.reason == "invalid_cap"


@pytest.mark.parametrize(
    ("old", "new", "detail"),
    [
        (b'URI=""', b'URI="#part"', "not the whole alert"),
        (b'URI=""', b'URI="http://attacker.example/alert.xml"', "not the whole alert"),
        (b"xmldsig#enveloped-signature", b"xmldsig#base64", "not an enveloped signature"),
        (
            b"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            b"http://www.w3.org/2000/09/xmldsig#rsa-sha1",
            "refused signature algorithm",
        ),
        (b"xmlenc#sha256", b"xmlenc#sha999", "unknown digest algorithm"),
    ],
)
def test_what_we_do_not_accept_is_unverified_before_any_crypto(
    signed, signer, monkeypatch, old, new, detail
) -> None:
    import signxml

    def no_verify(*args: object, **kwargs: object) -> None:
        raise AssertionError("signxml must not be called")

    monkeypatch.setattr(signxml.XMLVerifier, "verify", no_verify)
    changed = signed.replace(old, new, 1)
    assert changed != signed
    signature = result(changed, signer.cert)
    assert signature.status is UNVERIFIED and detail in signature.detail


def test_two_signatures_are_unverified(signed, signer) -> None:
    block = re.search(rb"<ds:Signature .*</ds:Signature>", signed, flags=re.S)
    assert block
    doubled = signed.replace(b"</alert>", block.group(0) + b"</alert>")
    signature = result(doubled, signer.cert)
    assert signature.status is UNVERIFIED and "2 signature elements" in signature.detail


def test_verification_touches_no_network(signed, signer, monkeypatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("no connection may be opened while checking a signature")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert result(signed, signer.cert).status is VALID


# -- require_signature -----------------------------------------------------------------------
def test_require_signature_passes_only_valid_ones(signed, signer, stranger) -> None:
    trust = CapTrust((signer.cert,), require_signature=True)
    (event,) = events_from_cap(signed, trust=trust)
    assert event.model_extra["signature"] == "valid"  # type: ignore[index]
    cases = [
        (tamper(signed, "headline", "x"), "signature_invalid", "cap signature invalid: digest"),
        (stranger.sign(ALERT), "signature_unverified", "cap signature unverified: certificate"),
        (ALERT, "signature_absent", "cap signature absent: the alert is not signed"),
        ((SAMPLES / IPAWS).read_bytes(), "signature_unverified", "not trusted (CN=IPAWSOPEN"),
    ]
    for xml, reason, message in cases:
        with pytest.raises(CapError) as refused:
            events_from_cap(xml, trust=trust)
        assert refused.value.reason == reason and message in str(refused.value)
    with pytest.raises(CapError, match="unverified: no trusted certificate configured"):
        events_from_cap(signed, trust=CapTrust(require_signature=True))


# -- config ----------------------------------------------------------------------------------
SEATTLE = Path(__file__).parents[2] / "examples" / "seattle" / "city.yaml"


def city_with_cap(tmp_path: Path, cap: dict) -> Path:  # type: ignore[type-arg]
    doc = yaml.safe_load(SEATTLE.read_text())
    for layer in doc["layers"].values():  # the copied config still finds its layers
        layer["path"] = str((SEATTLE.parent / layer["path"]).resolve())
    doc["cap"] = cap
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_config_certificates_are_relative_to_the_yaml_and_loaded(tmp_path, signer) -> None:
    (tmp_path / "certs").mkdir()
    signer.write_cert(tmp_path / "certs" / "oem.pem")
    config, _ = load_city(
        city_with_cap(
            tmp_path, {"trusted_certificates": ["certs/oem.pem"], "require_signature": True}
        )
    )
    assert config.cap.require_signature is True
    assert config.cap.trusted_certificates == [str(tmp_path / "certs" / "oem.pem")]
    from city.catalog import EventCatalog

    trust = EventCatalog(config).cap_trust
    assert trust.certificates == (signer.cert,) and trust.require_signature


def test_default_cap_section_trusts_nothing_and_requires_nothing(seattle) -> None:
    config, _ = seattle
    assert config.cap.trusted_certificates == [] and config.cap.require_signature is False


def test_config_errors_name_the_entry(tmp_path) -> None:
    (tmp_path / "notes.pem").write_text("not a certificate\n")
    weak = make_signer("Weak", bits=1024)
    weak.write_cert(tmp_path / "weak.pem")
    path = city_with_cap(
        tmp_path, {"trusted_certificates": ["missing.pem", "notes.pem", "weak.pem"]}
    )
    with pytest.raises(ConfigError) as err:
        load_city(path)
    text = str(err.value)
    assert f"{path}: cap.trusted_certificates[0]: cannot read" in text
    assert "No such file" in text
    assert "cap.trusted_certificates[1]: " in text and "holds no PEM certificate" in text
    assert "cap.trusted_certificates[2]: " in text and "RSA key of 1024 bits" in text
    with pytest.raises(ConfigError, match=r"cap.require_sig: Extra inputs"):
        load_city(city_with_cap(tmp_path, {"require_sig": True}))


def test_a_pem_file_may_hold_several_certificates(tmp_path, signer, stranger) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(signer.cert_pem + stranger.cert_pem)
    assert load_certificates([str(bundle)], None) == (signer.cert, stranger.cert)


# -- hostile signatures ----------------------------------------------------------------------
@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_mangled_signed_alert_is_a_result_never_a_crash(data, signed, signer) -> None:
    """Bytes of a signed alert (its content or its signature) replaced, cut or duplicated: the
    alert is either refused as XML/CAP (CapError) or accepted with one of the four results; when
    it is still valid (say a change in <KeyInfo>, which the signature does not cover), its
    events are exactly the signed alert's: what was verified is what is delivered."""
    inside = data.draw(st.booleans(), label="inside the signature")
    start = signed.index(b"<ds:Signature" if inside else b"<alert")
    end = signed.index(b"</ds:Signature>") + len(b"</ds:Signature>")
    i = data.draw(st.integers(start, end - 1), label="at")
    j = data.draw(st.integers(i, min(end, i + 64)), label="to")
    insert = data.draw(
        st.sampled_from([b"", b"A", b"<x/>", b"&amp;", b"=", b"<ds:KeyValue/>", signed[i:j] * 2]),
        label="insert",
    )
    mangled = signed[:i] + insert + signed[j:]
    try:
        signature = result(mangled, signer.cert)
    except CapError:
        return
    assert signature.status in set(SignatureStatus)
    if signature.status is VALID:
        trust = CapTrust((signer.cert,))
        again = [e.to_wire() for e in events_from_cap(mangled, trust=trust)]
        assert again == [e.to_wire() for e in events_from_cap(signed, trust=trust)]
