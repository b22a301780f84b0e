"""The one place a CAP document is accepted: `parse_alert` checks its size, parses it
safely (defusedxml: no DTD, so no entity expansion and no external entities), bounds the work
the tree can cost, and validates it against the CAP 1.2 schema (`city/data/cap12.xsd`, the
OASIS file, so enumerations, required elements, element order and date formats are exactly the
standard's). Every check of a whole document before it becomes events belongs here, the
alert's XML-DSig signature included (`accept_alert`, `city.cap.signature`): the signature is
taken out before schema validation (its own structure is the signature check's business, so an
incomplete one makes the alert ``unverified``, not invalid CAP) and checked after it, on the
raw bytes, so the size and work bounds and the schema come before any cryptography.

CAP 1.1 documents (still served by some feeds, e.g. the NWS atom index) are accepted by reading
them as 1.2: the two versions share every element cityrelay uses.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from city.cap.model import CAP11_NS, CAP12_NS, CapError, _q
from city.cap.signature import (
    NO_TRUST,
    CapTrust,
    SignatureResult,
    SignatureStatus,
    check_signature,
    signature_elements,
)
from city.events import MAX_EVENT_BYTES

SCHEMA_PATH = Path(__file__).parents[1] / "data" / "cap12.xsd"  # city/data/
# Checked before parsing. The sample alerts (tests/data/cap) are 2-5 KiB and each info block
# must fit one 64 KiB event anyway; 1 MiB bounds the time one hostile document can hold ingest.
# An alert embedding large resources (<derefUri>, base64 audio or images, not carried in the
# events) can exceed it: such feeds must be relayed without the embedded content.
MAX_CAP_BYTES = 1024 * 1024
# Work bounds checked on the parsed tree BEFORE schema validation and geometry, which cost
# ~50 us per element and ~1 ms per circle: without them one hostile 1 MiB document (13,000
# parameters, or 35,000 circles) held ingest for 2 to 46 seconds. Real alerts are far below:
# the NWS and IPAWS samples have under 100 elements and one or two info blocks.
MAX_CAP_ELEMENTS = 10_000
MAX_CAP_INFOS = 64
MAX_CAP_VERTICES = 20_000  # routing-geometry vertices in all info blocks (a circle makes 65)
CIRCLE_VERTICES = 65  # CIRCLE_SEGMENTS + the closing vertex


@cache
def _schema() -> Any:
    import xmlschema  # imported lazily: compiling the schema costs ~0.1 s, once per process

    return xmlschema.XMLSchema(str(SCHEMA_PATH))


@dataclass(frozen=True)
class AcceptedAlert:
    root: ET.Element  # in the CAP 1.2 namespace, without its <ds:Signature>
    signature: SignatureResult


def parse_alert(xml: bytes | str, trust: CapTrust = NO_TRUST) -> ET.Element:
    """Parse and validate a CAP alert; returns its root element in the CAP 1.2 namespace."""
    return accept_alert(xml, trust).root


def accept_alert(xml: bytes | str, trust: CapTrust = NO_TRUST) -> AcceptedAlert:
    """Parse, bound and validate a CAP alert and check its signature against `trust`.

    Raises `CapError` for what is not acceptable CAP and, when `trust.require_signature`,
    for an alert whose signature is not valid (reason ``signature_<result>``)."""
    raw = xml.encode("utf-8") if isinstance(xml, str) else xml
    root = _safe_root(raw)
    if root.tag == f"{{{CAP11_NS}}}alert":
        _rename_namespace(root, CAP11_NS, CAP12_NS)
    if root.tag != f"{{{CAP12_NS}}}alert":
        raise CapError(
            f"not a CAP 1.2 alert: root element is {root.tag!r}, expected <alert> in {CAP12_NS}"
        )
    _check_work_bounds(root)
    # The CAP schema's lax <any> for xmldsig would validate a signature it knows strictly: an
    # incomplete one would make the alert invalid CAP. The content is validated without it.
    signatures = signature_elements(root)
    for element in signatures:
        root.remove(element)
    problems = [
        _describe(err) for _, err in zip(range(5), _schema().iter_errors(root), strict=False)
    ]
    if problems:
        raise CapError("not valid CAP 1.2: " + "; ".join(problems))
    # On the bytes as received: the CAP 1.1 renaming above changed the tree, not what was signed.
    signature = check_signature(raw, signatures, trust)
    if trust.require_signature and signature.status is not SignatureStatus.VALID:
        why = signature.detail or "the alert is not signed"
        raise CapError(
            f"cap signature {signature.status}: {why} (cap.require_signature is true)",
            f"signature_{signature.status}",
        )
    return AcceptedAlert(root, signature)


def _check_work_bounds(root: ET.Element) -> None:
    """Refuse, as ``too_large``, what could only become events over the size limit, before
    spending time on it: too many elements or info blocks, or an info block whose carried text
    plus routing-geometry vertices (a lower bound of its event's JSON size) is over the limit."""
    elements = sum(1 for _ in root.iter())
    if elements > MAX_CAP_ELEMENTS:
        raise CapError(
            f"CAP alert has {elements} XML elements; the limit is {MAX_CAP_ELEMENTS}", "too_large"
        )
    infos = root.findall(_q("info"))
    if len(infos) > MAX_CAP_INFOS:
        raise CapError(
            f"CAP alert has {len(infos)} info blocks; the limit is {MAX_CAP_INFOS}", "too_large"
        )
    total_vertices = 0
    for index, info in enumerate(infos):
        text, vertices = _info_size(info)
        least = text + 6 * vertices  # each vertex is at least "[0,0]," in the event's JSON
        if least > MAX_EVENT_BYTES:
            raise CapError(
                f"/alert/info[{index + 1}] becomes an event of at least {least} bytes, over the"
                f" {MAX_EVENT_BYTES}-byte event limit (shorten the description or areas)",
                "too_large",
            )
        total_vertices += vertices
    if total_vertices > MAX_CAP_VERTICES:
        raise CapError(
            f"CAP alert has {total_vertices} routing-geometry vertices (a circle makes"
            f" {CIRCLE_VERTICES}); the limit is {MAX_CAP_VERTICES}",
            "too_large",
        )


def _info_size(info: ET.Element) -> tuple[int, int]:
    """(characters of text, routing-geometry vertices) of an info block: every text it holds
    is carried in its event (except embedded resources, ``derefUri``); a circle with a radius
    becomes 65 vertices."""
    text = 0
    vertices = 0
    for element in info.iter():
        if element.tag == _q("derefUri"):
            continue
        value = (element.text or "").strip()
        text += len(value)
        if element.tag == _q("polygon"):
            vertices += len(value.split())
        elif element.tag == _q("circle"):
            vertices += 1 if _zero_radius(value) else CIRCLE_VERTICES
    return text, vertices


def _zero_radius(circle: str) -> bool:
    parts = circle.split()
    try:
        return len(parts) == 2 and float(parts[1]) == 0
    except ValueError:
        return False


def _safe_root(xml: bytes | str) -> ET.Element:
    """Parse without trusting the document: size first, then no DTD at all (CAP never needs
    one; refusing it also refuses entity expansion and external DTD/entity references)."""
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    if len(xml) > MAX_CAP_BYTES:
        raise CapError(f"CAP alert is {len(xml)} bytes; the limit is {MAX_CAP_BYTES}", "too_large")
    try:
        return SafeET.fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise CapError(f"refused unsafe XML ({type(exc).__name__}): {exc}", "unsafe_xml") from None
    except ET.ParseError as exc:
        raise CapError(f"not well-formed XML: {exc}", "malformed_xml") from None
    except (ValueError, LookupError) as exc:
        # expat hands declared encodings it lacks to Python: unknown names raise LookupError,
        # multi-byte ones (utf-7, shift_jis...) ValueError.
        raise CapError(f"unreadable XML encoding: {exc}", "malformed_xml") from None


def _describe(err: Any) -> str:
    got = f" (got {err.obj!r})" if isinstance(err.obj, str) else ""
    return f"{err.path}: {err.reason}{got}".replace(f"{{{CAP12_NS}}}", "")


def _rename_namespace(root: ET.Element, old: str, new: str) -> None:
    prefix = f"{{{old}}}"
    for element in root.iter():
        if element.tag.startswith(prefix):
            element.tag = f"{{{new}}}{element.tag[len(prefix) :]}"
        if element.tag == f"{{{new}}}certainty" and (element.text or "").strip() == "Very Likely":
            element.text = "Likely"  # CAP 1.1 kept 1.0's "Very Likely"; 1.2 folds it into Likely
