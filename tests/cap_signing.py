"""Signed CAP alerts for the tests: a key and a self-signed certificate made here (with
`cryptography`), and signxml's XMLSigner making an enveloped signature over a whole alert, the
way IPAWS signs (RSA-SHA256, exclusive c14n, the certificate in KeyInfo)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import XMLSigner
from signxml.algorithms import CanonicalizationMethod


@dataclass(frozen=True)
class Signer:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    def write_cert(self, path: Path) -> Path:
        path.write_bytes(self.cert_pem)
        return path

    def sign(self, xml: bytes) -> bytes:
        """The alert with an enveloped ``<ds:Signature>`` as its last child."""
        root = etree.fromstring(xml)
        signed = XMLSigner(
            signature_algorithm="rsa-sha256",
            digest_algorithm="sha256",
            c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
        ).sign(root, key=self.key, cert=[self.cert])
        return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))


def make_signer(
    name: str = "Test Alert Origin",
    bits: int = 2048,
    not_before: datetime | None = None,
    days: int = 30,
) -> Signer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = not_before or datetime.now(UTC) - timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .sign(key, hashes.SHA256())
    )
    return Signer(key, cert)


def tamper(xml: bytes, element: str, value: str) -> bytes:
    """The signed alert with the text of its first `element` replaced (signature untouched)."""
    changed, count = re.subn(
        rf"<{element}>[^<]*</{element}>".encode(),
        f"<{element}>{value}</{element}>".encode(),
        xml,
        count=1,
    )
    assert count == 1, f"no <{element}> to tamper with"
    return changed
