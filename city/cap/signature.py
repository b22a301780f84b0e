"""XML-DSig signatures on CAP alerts: which certificates the city trusts, and what one alert's
``<ds:Signature>`` is worth (`check_signature` -> `SignatureResult`).

CAP 1.2 lets an alert carry one enveloped XML signature over the whole ``<alert>`` (IPAWS and
Google Public Alerts sign theirs). The result is one of:

- ``valid``: the signature verifies with the key of a trusted certificate (``cap.trusted_
  certificates`` in the city config), over the whole alert;
- ``invalid``: a complete signature by a trusted certificate that does not verify: the content
  was changed after signing (digest mismatch) or the signature value is wrong;
- ``unverified``: a signature element we cannot check: incomplete, an algorithm or transform
  we do not accept, a reference to less than the whole alert, no trusted certificate
  configured, a certificate we do not trust, or a trusted one outside its validity period;
- ``absent``: no signature.

Trust is pinned: a signature counts only when made with the key of a certificate named in the
config. The signature must embed its ``X509Certificate``; it selects the one trusted certificate
to check against, so an alert costs at most one signature verification however many
certificates the city trusts. Certificates in the alert are never trusted by themselves, and no
CA store (signxml's default is certifi's web PKI) is ever consulted.

`signxml` does the canonicalisation, digests and signature check on the alert's raw bytes (it
re-parses them with lxml; `check_signature` runs only on a document `schema.parse_alert` has
already parsed safely, bounded and validated). It is given an lxml parser that loads no DTD,
resolves no entity and never touches the network, and no URI resolver, so references outside
the document are refused instead of fetched.
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict, Field

from city.errors import ConfigError

DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
ENVELOPED = f"{DSIG_NS}enveloped-signature"
# Trusted keys: RSA of a sane size, or the NIST curves of at least 256 bits. A key is chosen by
# the operator, but a 64k-bit RSA key (or a weak one) in the config is a mistake worth naming.
RSA_BITS = (2048, 8192)
EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")
MAX_EMBEDDED_CERTIFICATES = 8  # certificates of one signature's X509Data looked at


class SignatureStatus(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    UNVERIFIED = "unverified"
    ABSENT = "absent"


@dataclass(frozen=True)
class SignatureResult:
    status: SignatureStatus
    detail: str = ""  # why, for people: "digest mismatch", "certificate not trusted (...)"
    signer: str | None = None  # the trusted certificate's subject, when valid

    def describe(self) -> str:
        """``valid (signed by CN=...)``, ``unverified: no trusted certificate configured``."""
        if self.status is SignatureStatus.VALID:
            return f"valid (signed by {self.signer})"
        return f"{self.status}: {self.detail}" if self.detail else str(self.status)


class CapConfig(BaseModel):
    """The city config's ``cap:`` section.

    ``trusted_certificates``: PEM files (one or more certificates each; relative paths are
    from the city YAML's folder) whose keys may sign alerts. ``require_signature``: refuse
    every alert whose signature is not ``valid``.
    """

    model_config = ConfigDict(extra="forbid")

    trusted_certificates: list[str] = Field(default_factory=list)
    require_signature: bool = False


@dataclass(frozen=True)
class CapTrust:
    """The loaded form of `CapConfig`: what `check_signature` checks against."""

    certificates: tuple[x509.Certificate, ...] = ()
    require_signature: bool = False
    # When certificates' validity is judged (None: now). For re-checking archived alerts.
    verification_time: datetime | None = None


NO_TRUST = CapTrust()


def load_certificates(
    paths: list[str], base_dir: Path | None, source: str | Path = "<config>"
) -> tuple[x509.Certificate, ...]:
    """Every certificate in the PEM files `paths` (relative ones from `base_dir`); a missing
    file, one that holds no certificate or one whose key we would not verify with is a
    `ConfigError` naming ``cap.trusted_certificates[i]``."""
    certificates: list[x509.Certificate] = []
    problems: list[tuple[str, str]] = []
    for index, name in enumerate(paths):
        where = f"cap.trusted_certificates[{index}]"
        path = Path(name)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            loaded = x509.load_pem_x509_certificates(path.read_bytes())
        except OSError as exc:
            problems.append((where, f"cannot read {str(path)!r}: {exc.strerror or exc}"))
            continue
        except ValueError:
            problems.append((where, f"{str(path)!r} holds no PEM certificate"))
            continue
        for cert in loaded:
            unfit = _unfit_key(cert)
            if unfit:
                problems.append((where, f"{str(path)!r}: {unfit}"))
            certificates.append(cert)
    if problems:
        raise ConfigError(source, problems)
    return tuple(certificates)


def trust_from_config(
    config: CapConfig, base_dir: Path | None = None, source: str | Path = "<config>"
) -> CapTrust:
    return CapTrust(
        certificates=load_certificates(config.trusted_certificates, base_dir, source),
        require_signature=config.require_signature,
    )


def _unfit_key(cert: x509.Certificate) -> str | None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        low, high = RSA_BITS
        if not low <= key.key_size <= high:
            return f"RSA key of {key.key_size} bits; trusted keys are {low}-{high} bits"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in EC_CURVES:
            return f"EC curve {key.curve.name}; trusted curves are {', '.join(EC_CURVES)}"
        return None
    return f"a {type(key).__name__.lstrip('_')} key; trusted keys are RSA or EC"


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _ds(name: str) -> str:
    return f"{{{DSIG_NS}}}{name}"


def signature_elements(root: ET.Element) -> list[ET.Element]:
    """The alert's own ``<ds:Signature>`` children (where CAP puts an enveloped signature)."""
    return root.findall(_ds("Signature"))


def check_signature(
    raw: bytes, signatures: list[ET.Element], trust: CapTrust = NO_TRUST
) -> SignatureResult:
    """What the alert's signature is worth. `raw` is the document exactly as received (what
    was signed); `signatures` its ``<ds:Signature>`` children from the safe parse, looked at
    before any cryptography. Never raises for a bad signature: that is a result."""
    if not signatures:
        return SignatureResult(SignatureStatus.ABSENT)
    if len(signatures) > 1:
        return _unverified(f"{len(signatures)} signature elements; an alert carries one")
    signature = signatures[0]
    problem = _incomplete(signature)
    if problem:
        return _unverified(f"incomplete signature: {problem}")
    problem = _unsupported(signature)
    if problem:
        return _unverified(problem)
    if not trust.certificates:
        return _unverified("no trusted certificate configured")
    embedded, problem = _embedded_certificates(signature)
    if problem:
        return _unverified(problem)
    keys = {_spki(cert) for cert in embedded}
    candidates = {_spki(c): c for c in trust.certificates if _spki(c) in keys}
    if not candidates:
        subject = embedded[0].subject.rfc4514_string()
        return _unverified(f"certificate not trusted ({subject})")
    # The embedded certificates name the key; duplicates of one key in the trust list are one
    # candidate, and the first of several is checked: at most one verification per alert.
    return _verify(raw, next(iter(candidates.values())), trust)


def _unverified(detail: str) -> SignatureResult:
    return SignatureResult(SignatureStatus.UNVERIFIED, detail)


def _incomplete(signature: ET.Element) -> str | None:
    """What a signature lacks to be checked at all, or None: XML-DSig's required parts."""
    signed_info = signature.find(_ds("SignedInfo"))
    if signed_info is None:
        return "no <SignedInfo>"
    for part in ("CanonicalizationMethod", "SignatureMethod"):
        element = signed_info.find(_ds(part))
        if element is None or not element.get("Algorithm"):
            return f"no <{part}> with an Algorithm"
    references = signed_info.findall(_ds("Reference"))
    if len(references) != 1:
        return f"{len(references)} <Reference> elements; an enveloped CAP signature has one"
    digest_method = references[0].find(_ds("DigestMethod"))
    if digest_method is None or not digest_method.get("Algorithm"):
        return "no <DigestMethod> with an Algorithm"
    if not (references[0].findtext(_ds("DigestValue")) or "").strip():
        return "no <DigestValue>"
    if not (signature.findtext(_ds("SignatureValue")) or "").strip():
        return "no <SignatureValue>"
    return None


def _unsupported(signature: ET.Element) -> str | None:
    """Algorithms and transforms we do not accept, or a reference to less than the alert.

    Only the whole alert may be signed (``URI=""``, enveloped): a signature over a part would
    be "valid" while the rest of the alert was anybody's. Transforms: the enveloped one and
    canonicalisation; SHA-1 is refused (signxml's defaults)."""
    from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

    signed_info = signature.find(_ds("SignedInfo"))
    assert signed_info is not None  # _incomplete checked it
    reference = signed_info.find(_ds("Reference"))
    assert reference is not None
    if reference.get("URI") != "":
        return f'the signature covers {reference.get("URI")!r}, not the whole alert (URI="")'
    transforms = [t.get("Algorithm") or "" for t in reference.iter(_ds("Transform"))]
    if ENVELOPED not in transforms:
        return "not an enveloped signature (no enveloped-signature transform)"
    c14n = {m.value for m in CanonicalizationMethod}
    for transform in transforms:
        if transform != ENVELOPED and transform not in c14n:
            return f"unsupported transform {transform!r}"
    checks: list[tuple[str, Any, str]] = [
        ("canonicalization", CanonicalizationMethod, _algorithm(signed_info, "C14N")),
        ("signature", SignatureMethod, _algorithm(signed_info, "SignatureMethod")),
        ("digest", DigestAlgorithm, _algorithm(reference, "DigestMethod")),
    ]
    for kind, enum, value in checks:
        try:
            member = enum(value)
        except ValueError:
            return f"unknown {kind} algorithm {value!r}"
        if "SHA1" in member.name or "HMAC" in member.name:
            return f"refused {kind} algorithm {value!r} (SHA-1 and shared-secret HMAC)"
    return None


def _algorithm(parent: ET.Element, name: str) -> str:
    element = parent.find(_ds("CanonicalizationMethod" if name == "C14N" else name))
    return (element.get("Algorithm") if element is not None else None) or ""


def _embedded_certificates(signature: ET.Element) -> tuple[list[x509.Certificate], str | None]:
    path = "/".join(_ds(name) for name in ("KeyInfo", "X509Data", "X509Certificate"))
    texts = [(e.text or "").strip() for e in signature.iterfind(path)]
    texts = texts[:MAX_EMBEDDED_CERTIFICATES]
    if not texts:
        return [], "the signature carries no <X509Certificate> to match a trusted one"
    certificates = []
    for text in texts:
        try:
            certificates.append(x509.load_der_x509_certificate(base64.b64decode(text)))
        except (ValueError, binascii.Error) as exc:
            return [], f"unreadable <X509Certificate> in the signature: {exc}"
    return certificates, None


def _verify(raw: bytes, certificate: x509.Certificate, trust: CapTrust) -> SignatureResult:
    """One signxml verification with the trusted certificate's key."""
    import cryptography.exceptions
    from lxml import etree
    from signxml import SignatureConfiguration, XMLVerifier
    from signxml.exceptions import InvalidCertificate, InvalidDigest, SignXMLException

    subject = certificate.subject.rfc4514_string()
    at = trust.verification_time or datetime.now(UTC)
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if not start <= at <= end:
        when = f"expired on {end:%Y-%m-%d}" if at > end else f"is not valid before {start:%Y-%m-%d}"
        return _unverified(f"trusted certificate {subject} {when}")
    # No DTD, no entities, no network: what defusedxml already refused stays refused here.
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    expect = SignatureConfiguration(
        location="./",  # a child of <alert>: enveloped, where CAP puts it
        expect_references=1,
        verification_time=trust.verification_time,
    )
    try:
        XMLVerifier().verify(raw, x509_cert=certificate, parser=parser, expect_config=expect)
    except InvalidDigest:
        return SignatureResult(
            SignatureStatus.INVALID, "digest mismatch (the alert was changed after signing)"
        )
    except InvalidCertificate as exc:
        return _unverified(f"trusted certificate {subject} refused: {_short(exc)}")
    except cryptography.exceptions.InvalidSignature:
        return SignatureResult(
            SignatureStatus.INVALID, f"signature value does not verify with {subject}"
        )
    except (SignXMLException, ValueError, etree.LxmlError) as exc:
        return _unverified(f"cannot check the signature: {_short(exc)}")
    except Exception as exc:  # noqa: BLE001 - signxml tripping on a hostile signature
        # (a KeyValue naming an unknown curve raises KeyError, one of another key type
        # NotImplementedError): we could not check it, which is what unverified means.
        return _unverified(f"cannot check the signature: {type(exc).__name__}: {_short(exc)}")
    return SignatureResult(SignatureStatus.VALID, signer=subject)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
