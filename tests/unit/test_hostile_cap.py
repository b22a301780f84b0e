"""Hostile CAP XML at ingest (the raw path: an entry with a ``cap`` field).

Whatever a feed bridge sends is either turned into events (exactly those `events_from_cap`
makes, queued for routing) or dead-lettered with a reason, a message and the original bytes
(cut to `MAX_DEAD_LETTER_BODY`, and the message says so); ingest never raises and leaves
nothing pending. A table of named attacks pins the reason of each; hypothesis then mutates the
real alerts in tests/data/cap/ (values, missing elements, namespaces, geometry, encodings,
size, nesting, raw bytes). The terminal summary counts the documents tried.
"""

from __future__ import annotations

import math
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import shapely.geometry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from city.cap import MAX_CAP_BYTES, CapError, events_from_cap
from queues.ingest_decode import CAP_FIELD, MAX_DEAD_LETTER_BODY
from queues.keys import Keys
from tests.conftest import HOSTILE_TRIED
from workers.ingest import IngestWorker

DATA = Path(__file__).resolve().parents[1] / "data" / "cap"
DOCS = {path.name: path.read_bytes() for path in sorted(DATA.glob("*.xml"))}
NWS = DOCS["nws-5c2cf27b1f56885d61654dc47fa411d5.xml"]  # CAP 1.1, from the NWS index
DHS = DOCS["v1dot2_appendix_adot1.xml"]  # CAP 1.2
TWO_INFOS = DOCS["v1dot2_appendix_adot4.xml"]
NS12 = b"urn:oasis:names:tc:emergency:cap:1.2"
NS11 = b"urn:oasis:names:tc:emergency:cap:1.1"
SIMPLE_ELEMENT = re.compile(rb"<(\w+)>([^<]*)</\1>")  # CAP's simple-content elements
CAP_REASONS = {"too_large", "unsafe_xml", "malformed_xml", "invalid_cap"}
DEPT = "sdot"
PASSWD_MARKER = b"root:"  # /etc/passwd must never leak into an event or a dead letter


def body_of(doc: bytes) -> bytes:
    """The document without its XML declaration (to put a DOCTYPE or PI in front)."""
    return doc[doc.index(b"<alert") :]


def with_headline(doc: bytes, text: bytes) -> bytes:
    return re.sub(
        rb"<headline>[^<]*</headline>", b"<headline>" + text + b"</headline>", doc, count=1
    )


def before_info_end(doc: bytes, xml: bytes) -> bytes:
    """`xml` appended as the last child of the first <info> (where <area> belongs)."""
    return doc.replace(b"</info>", xml + b"</info>", 1)


def area(*shapes: bytes) -> bytes:
    return b"<area><areaDesc>hostile</areaDesc>" + b"".join(shapes) + b"</area>"


def polygon(text: str) -> bytes:
    return f"<polygon>{text}</polygon>".encode()


def circle(text: str) -> bytes:
    return f"<circle>{text}</circle>".encode()


def nested(depth: int) -> bytes:
    return b"<x>" * depth + b"</x>" * depth


LOL = (
    b'<?xml version="1.0"?>\n<!DOCTYPE alert [\n<!ENTITY lol "lol">\n'
    + b"".join(
        b'<!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]>\n"
)
QUADRATIC = b'<?xml version="1.0"?>\n<!DOCTYPE alert [<!ENTITY big "' + b"B" * 50_000 + b'">]>\n'

# name -> (document, the reason it must be dead-lettered with; None: it must be accepted)
CASES: dict[str, tuple[bytes, str | None]] = {
    "valid NWS alert": (NWS, None),
    "valid alert with two infos": (TWO_INFOS, None),
    "billion laughs": (LOL + with_headline(body_of(NWS), b"&lol9;"), "unsafe_xml"),
    "quadratic blowup": (QUADRATIC + with_headline(body_of(NWS), b"&big;" * 2000), "unsafe_xml"),
    "external entity file:///etc/passwd": (
        b'<!DOCTYPE alert [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        + with_headline(body_of(NWS), b"&x;"),
        "unsafe_xml",
    ),
    "external entity http": (
        b'<!DOCTYPE alert [<!ENTITY x SYSTEM "http://127.0.0.1:9/steal">]>'
        + with_headline(body_of(NWS), b"&x;"),
        "unsafe_xml",
    ),
    "parameter entity": (
        b'<!DOCTYPE alert [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>' + body_of(NWS),
        "unsafe_xml",
    ),
    "external DTD": (b'<!DOCTYPE alert SYSTEM "file:///etc/passwd">' + body_of(NWS), "unsafe_xml"),
    "bare DOCTYPE": (b"<!DOCTYPE alert>" + body_of(NWS), "unsafe_xml"),
    "processing instruction before the root": (
        b'<?xml-stylesheet type="text/xsl" href="http://127.0.0.1:9/x.xsl"?>' + body_of(NWS),
        None,
    ),
    "processing instruction inside an element": (with_headline(NWS, b"<?php evil() ?>"), None),
    "XInclude of /etc/passwd": (
        with_headline(
            NWS,
            b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd"'
            b' parse="text"/>',
        ),
        "invalid_cap",
    ),
    "not XML at all": (b"PK\x03\x04 this is a zip file", "malformed_xml"),
    "empty": (b"", "malformed_xml"),
    "truncated": (NWS[: len(NWS) // 2], "malformed_xml"),
    "non-UTF-8 bytes in a UTF-8 document": (
        with_headline(NWS, b"caf\xe9 \xff\xfe"),
        "malformed_xml",
    ),
    "UTF-16 document declaring UTF-8": (NWS.decode().encode("utf-16"), "malformed_xml"),
    "unknown declared encoding": (
        b'<?xml version="1.0" encoding="x-made-up"?>' + body_of(NWS),
        "malformed_xml",
    ),
    "multi-byte declared encoding": (
        b'<?xml version="1.0" encoding="shift_jis"?>' + body_of(NWS),
        "malformed_xml",
    ),
    "latin-1 document that says so": (
        b'<?xml version="1.0" encoding="ISO-8859-1"?>' + with_headline(body_of(NWS), b"caf\xe9"),
        None,
    ),
    "CAP 1.2 read as 1.1": (DHS.replace(NS12, NS11), None),
    "CAP 1.0 namespace": (DHS.replace(NS12, b"http://www.incident.com/cap/1.0"), "invalid_cap"),
    "CAP 1.3 namespace": (DHS.replace(NS12, NS12[:-1] + b"3"), "invalid_cap"),
    "no namespace": (re.sub(rb'\s*xmlns\s*=\s*"[^"]*"', b"", DHS, count=1), "invalid_cap"),
    "wrong root": (b"<feed xmlns='http://www.w3.org/2005/Atom'/>", "invalid_cap"),
    "missing identifier": (re.sub(rb"<identifier>[^<]*</identifier>", b"", NWS), "invalid_cap"),
    "empty sender": (re.sub(rb"<sender>[^<]*</sender>", b"<sender> </sender>", NWS), "invalid_cap"),
    "urgency Soon": (re.sub(rb"<urgency>\w+<", b"<urgency>Soon<", NWS), "invalid_cap"),
    "sent with Z": (re.sub(rb"<sent>[^<]*<", b"<sent>2026-11-25T10:00:00Z<", NWS), "invalid_cap"),
    "expires past year 9999 in UTC": (
        re.sub(rb"<expires>[^<]*<", b"<expires>9999-12-31T23:59:59-12:00<", NWS),
        "invalid_cap",
    ),
    "self-intersecting polygon": (
        before_info_end(
            NWS,
            area(polygon("47.60,-122.35 47.62,-122.33 47.60,-122.33 47.62,-122.35 47.60,-122.35")),
        ),
        "invalid_cap",
    ),  # fmt: skip
    "unclosed polygon": (
        before_info_end(
            NWS, area(polygon("47.60,-122.35 47.62,-122.35 47.62,-122.33 47.60,-122.33"))
        ),
        "invalid_cap",
    ),  # fmt: skip
    "polygon with three pairs": (
        before_info_end(NWS, area(polygon("47.60,-122.35 47.62,-122.35 47.60,-122.35"))),
        "invalid_cap",
    ),
    "NaN coordinates": (
        before_info_end(NWS, area(polygon("nan,nan 47.62,-122.35 47.62,-122.33 nan,nan"))),
        "invalid_cap",
    ),
    "latitude 91": (
        before_info_end(NWS, area(polygon("91,-122.35 47.62,-122.35 47.62,-122.33 91,-122.35"))),
        "invalid_cap",
    ),
    "circle with negative radius": (
        before_info_end(NWS, area(circle("47.6,-122.3 -5"))),
        "invalid_cap",
    ),
    "circle with infinite radius": (
        before_info_end(NWS, area(circle("47.6,-122.3 inf"))),
        "invalid_cap",
    ),
    "circle over the pole": (before_info_end(NWS, area(circle("89.9,0 100"))), "invalid_cap"),
    "circle without radius": (before_info_end(NWS, area(circle("47.6,-122.3"))), "invalid_cap"),
    "resource size with 5000 digits": (
        before_info_end(
            NWS.replace(
                b"<area>",
                b"<resource><resourceDesc>r</resourceDesc><mimeType>text/plain"
                b"</mimeType><size>" + b"9" * 5000 + b"</size></resource><area>",
                1,
            ),
            b"",
        ),
        "invalid_cap",
    ),  # fmt: skip
    "nesting inside info": (before_info_end(NWS, nested(1000)), "invalid_cap"),
    "deep nesting: too many elements": (before_info_end(NWS, nested(100_000)), "too_large"),
    "65 info blocks": (
        DHS.replace(
            b"</alert>", DHS[DHS.index(b"<info>") : DHS.index(b"</info>") + 7] * 64 + b"</alert>"
        ),
        "too_large",
    ),  # fmt: skip
    "300 circles in one info block": (
        before_info_end(DHS, area(*[circle(f"47.6,-122.3 {r}") for r in range(1, 301)])),
        "too_large",
    ),
    "40 infos of 150 circles each (6,000 circles)": (
        DHS.replace(
            b"</alert>",
            before_info_end(
                DHS[DHS.index(b"<info>") : DHS.index(b"</info>") + 7],
                area(*[circle(f"47.6,-122.3 {r}") for r in range(1, 151)]),
            )
            * 40
            + b"</alert>",
        ),
        "too_large",
    ),
    "deep nesting past the size cap": (before_info_end(NWS, nested(200_000)), "too_large"),
    "description over the event limit": (
        re.sub(rb"<description>", b"<description>" + b"d" * 70_000, NWS, count=1),
        "too_large",
    ),
    "document over the size cap": (
        re.sub(rb"<description>", b"<description>" + b"d" * MAX_CAP_BYTES, NWS, count=1),
        "too_large",
    ),
    "ten megabytes": (b"<" * 10_000_000, "too_large"),
}


def ingest_one(redis: Redis, config: Any, doc: bytes, lane: str = "routine") -> dict[str, Any]:
    """Publish `doc` raw on a fresh key prefix (no dedupe across inputs), run one ingest step,
    check the invariants every input must meet, and return what happened. Ingest reads only
    the publishing department's streams: the decode path is the same, and the run is faster."""
    config = config.model_copy(
        update={"departments": [d for d in config.departments if d.id == DEPT]}
    )
    keys = Keys(f"t{uuid.uuid4().hex[:10]}")
    ingest = IngestWorker(redis, keys, config, consumer="hostile-cap")
    stream = keys.ingest(DEPT, lane)
    entry_id = redis.xadd(stream, {CAP_FIELD: doc}).decode()
    counters = ingest.step(None)  # must not raise
    HOSTILE_TRIED["cap"] += 1
    letters = redis.xrange(keys.deadletter)
    assert redis.xpending(stream, "router")["pending"] == 0
    assert bool(letters) != bool(counters["accepted"]), (counters, letters)
    queued = [
        item["e"] for queue in ingest.queues.values() for job in queue.jobs for item in job.args[0]
    ]
    outcome: dict[str, Any] = {"queued": queued, "reason": None}
    if letters:
        ((_, fields),) = letters
        fields = {k.decode(): v for k, v in fields.items()}
        reason, message = fields["reason"].decode(), fields["message"].decode()
        assert reason in CAP_REASONS, (reason, message)
        assert message and fields["stage"] == b"ingest" and fields["entry"].decode() == entry_id
        if len(doc) <= MAX_DEAD_LETTER_BODY:
            assert fields["body"] == doc
        else:
            assert fields["body"] == doc[:MAX_DEAD_LETTER_BODY]
            assert message.startswith(f"[body truncated to the first {MAX_DEAD_LETTER_BODY} of")
        assert not queued and PASSWD_MARKER not in fields["message"]
        outcome.update(reason=reason, message=message)
    else:
        assert len(queued) == counters["accepted"] >= 1
        for wire in queued:
            assert wire["type"].startswith("cap.") and wire["department"] == DEPT
            assert PASSWD_MARKER.decode() not in str(wire)
            location = wire.get("location")
            if location is not None:
                geometry = shapely.geometry.shape(location)
                # Overlapping areas are fine (the router unions them); each part must be valid.
                assert all(part.is_valid for part in getattr(geometry, "geoms", [geometry]))
                assert not geometry.is_empty
                minx, miny, maxx, maxy = geometry.bounds
                assert -180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90
                assert all(math.isfinite(v) for v in geometry.bounds)
    return outcome


def expected_outcome(doc: bytes) -> tuple[list[str], str | None]:
    """What the pure parser says: (event ids, None) or ([], the CapError's reason)."""
    try:
        return [e.id for e in events_from_cap(doc, department=DEPT)], None
    except CapError as exc:
        return [], exc.reason


@pytest.mark.parametrize("name", list(CASES))
def test_named_hostile_documents_get_their_reason(redis, seattle, name):
    doc, reason = CASES[name]
    outcome = ingest_one(redis, seattle[0], doc)
    assert outcome["reason"] == reason, outcome.get("message")
    if reason is None:
        assert [e["id"] for e in outcome["queued"]] == expected_outcome(doc)[0]


# --- hypothesis: mutations of the real alerts ------------------------------------------------

HOSTILE_VALUES = [
    "", " ", "NaN", "nan,nan", "inf", "-inf", "-1", "1e309", "0x10", "Soon", "ACTUAL", "actual",
    "2026-13-01T00:00:00-00:00", "2026-02-30T00:00:00-00:00", "9999-12-31T23:59:59-12:00",
    "0001-01-01T00:00:00+14:00", "2026-11-25T10:00:00Z", "91,181", "47.6,-122.3 -1", "x" * 300,
    "<", "&amp;", "&lt;x&gt;", "]]>", "\u202e\u0000", "\ud800", "Public Restricted",
]  # fmt: skip
documents = st.sampled_from(sorted(DOCS)).map(DOCS.__getitem__)
coordinate = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-90, 90),
    st.sampled_from([0.0, 90.0, -90.0, 180.0, -180.0, 47.6, -122.3]),
)
pair = st.tuples(coordinate, coordinate).map(lambda p: f"{p[0]},{p[1]}")


@st.composite
def polygon_text(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(pair, min_size=0, max_size=12))
    if pairs and draw(st.booleans()):
        pairs.append(pairs[0])  # closed, as CAP requires
    return " ".join(pairs)


circle_text = st.builds(
    lambda centre, radius: f"{centre} {radius}",
    pair,
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["", "-0", "km"])),
)


@st.composite
def swap_value(draw: st.DrawFn) -> bytes:
    doc = draw(documents)
    matches = list(SIMPLE_ELEMENT.finditer(doc))
    m = draw(st.sampled_from(matches))
    value = draw(st.one_of(st.sampled_from(HOSTILE_VALUES), st.text(max_size=40)))
    raw = value.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):  # escaped, so the XML stays well-formed
        raw = value.replace("&", "&amp;").replace("<", "&lt;").encode("utf-8", "surrogatepass")
    return doc[: m.start(2)] + raw + doc[m.end(2) :]


@st.composite
def drop_element(draw: st.DrawFn) -> bytes:
    doc = draw(documents)
    m = draw(st.sampled_from(list(SIMPLE_ELEMENT.finditer(doc))))
    return doc[: m.start()] + doc[m.end() :]


@st.composite
def swap_namespace(draw: st.DrawFn) -> bytes:
    doc = draw(documents)
    ns = draw(
        st.one_of(
            st.sampled_from(
                [b"urn:oasis:names:tc:emergency:cap:1.1", b"urn:oasis:names:tc:emergency:cap:1.3",
                 b"urn:oasis:names:tc:emergency:cap:2.0", b"", b"urn:evil"]
            ),
            st.text(max_size=30).map(lambda t: t.replace('"', "").encode()),
        )
    )  # fmt: skip
    return doc.replace(NS12, ns).replace(NS11, ns)


@st.composite
def hostile_geometry(draw: st.DrawFn) -> bytes:
    doc = draw(documents)
    shapes = draw(
        st.lists(
            st.one_of(polygon_text().map(polygon), circle_text.map(circle)), min_size=1, max_size=3
        )
    )
    return before_info_end(doc, area(*shapes))


@st.composite
def hostile_size(draw: st.DrawFn) -> bytes:
    doc = draw(documents)
    kind = draw(st.sampled_from(["description", "nesting", "areas"]))
    if kind == "description":
        n = draw(st.sampled_from([60_000, 66_000, MAX_CAP_BYTES - 2000, MAX_CAP_BYTES + 1]))
        return doc.replace(b"</alert>", b"<note>" + b"n" * n + b"</note></alert>")
    if kind == "nesting":
        return before_info_end(doc, nested(draw(st.sampled_from([10, 1000, 30_000, 160_000]))))
    square = polygon("47.60,-122.35 47.62,-122.35 47.62,-122.33 47.60,-122.33 47.60,-122.35")
    return before_info_end(doc, area(square) * draw(st.integers(1, 400)))


@st.composite
def reencoded(draw: st.DrawFn) -> bytes:
    text = draw(documents).decode("utf-8")
    encoding = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252"]))
    declared = draw(st.sampled_from(["UTF-8", encoding, "utf-7", "ebcdic", ""]))
    text = re.sub(r"<\?xml[^>]*\?>", "", text, count=1)
    if declared:
        text = f'<?xml version="1.0" encoding="{declared}"?>' + text
    return text.encode(encoding, errors="replace")


@st.composite
def byte_noise(draw: st.DrawFn) -> bytes:
    doc = draw(documents)
    at = draw(st.integers(0, len(doc)))
    cut = draw(st.integers(0, 8))
    noise = draw(
        st.one_of(
            st.binary(max_size=8),
            st.sampled_from(
                [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"<", b"&", b"]]>"]
            ),
        )
    )
    return doc[:at] + noise + doc[at + cut :]


hostile_documents = st.one_of(
    swap_value(),
    drop_element(),
    swap_namespace(),
    hostile_geometry(),
    hostile_size(),
    reencoded(),
    byte_noise(),
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(doc=hostile_documents)
def test_any_cap_document_is_routed_or_dead_lettered_with_a_reason(redis, seattle, doc):
    ids, reason = expected_outcome(doc)  # must raise nothing but CapError
    outcome = ingest_one(redis, seattle[0], doc)
    if reason is not None:
        assert outcome["reason"] == reason, outcome.get("message")
    else:
        assert [e["id"] for e in outcome["queued"]] == ids
