"""How long one hostile CAP document can hold ingest: `events_from_cap` on the costliest
documents we know how to build, each up to the 1 MiB size cap.

Each case is a real CAP 1.2 alert (tests/data/cap/) padded with one kind of bulk: nesting,
parameters, info blocks, circles (each becomes a 64-gon), polygon vertices, text. Some are
sized to fill 1 MiB, the others to sit just under the work bounds (elements, info blocks,
vertices, event size), where the most work is done before a refusal. The schema is compiled
before timing. Prints one JSON object: per case the bytes, seconds (best of --repeat) and
outcome, and ``worst_s``.

    python bench/cap_hostile.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from city.cap import MAX_CAP_BYTES, CapError, events_from_cap  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "cap"
DOC = (DATA / "v1dot2_appendix_adot1.xml").read_bytes()
INFO = DOC[DOC.index(b"<info>") : DOC.index(b"</info>") + 7]
PARAMETER = b"<parameter><valueName>a</valueName><value>b</value></parameter>"


def in_info(doc: bytes, xml: bytes) -> bytes:
    return doc.replace(b"</info>", xml + b"</info>", 1)


def before_resource(doc: bytes, xml: bytes) -> bytes:
    return doc.replace(b"<resource>", xml + b"<resource>", 1)


def more_infos(doc: bytes, info: bytes, n: int) -> bytes:
    return doc.replace(b"</alert>", info * n + b"</alert>")


def circles(n: int) -> bytes:
    shapes = b"".join(b"<circle>47.6,-122.3 %d</circle>" % (i + 1) for i in range(n))
    return b"<area><areaDesc>a</areaDesc>" + shapes + b"</area>"


def ring(k: int) -> bytes:
    pts = [
        f"{47.6 + 0.01 * math.sin(2 * math.pi * i / k):.6f},"
        f"{-122.3 + 0.01 * math.cos(2 * math.pi * i / k):.6f}"
        for i in range(k)
    ]
    return (
        b"<area><areaDesc>a</areaDesc><polygon>"
        + " ".join([*pts, pts[0]]).encode()
        + (b"</polygon></area>")
    )


def filled(make: Callable[[int], bytes]) -> bytes:
    """make(n) for the largest n that stays within MAX_CAP_BYTES."""
    lo, hi = 1, 2
    while len(make(hi)) <= MAX_CAP_BYTES:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if len(make(mid)) <= MAX_CAP_BYTES else (lo, mid)
    return make(lo)


CASES: dict[str, Callable[[], bytes]] = {
    "1 MiB of nesting": lambda: filled(lambda n: in_info(DOC, b"<x>" * n + b"</x>" * n)),
    "1 MiB of parameters": lambda: filled(lambda n: before_resource(DOC, PARAMETER * n)),
    "1 MiB of circles": lambda: filled(lambda n: in_info(DOC, circles(n))),
    "1 MiB of info blocks": lambda: filled(lambda n: more_infos(DOC, INFO, n)),
    "1 MiB polygon": lambda: filled(lambda n: in_info(DOC, ring(n))),
    "3,300 parameters (under 10,000 elements)": lambda: before_resource(DOC, PARAMETER * 3300),
    "1,800 parameters and 64 info blocks": lambda: more_infos(
        before_resource(DOC, PARAMETER * 1800), INFO, 63
    ),
    "150 circles (just under the event size bound)": lambda: in_info(DOC, circles(150)),
    "300 circles over 2 info blocks (under 20,000 vertices)": lambda: more_infos(
        in_info(DOC, circles(150)), in_info(INFO, circles(150)), 1
    ),
    "64 info blocks with a 300-vertex polygon each": lambda: more_infos(
        in_info(DOC, ring(300)), in_info(INFO, ring(300)), 63
    ),
    "64 info blocks with 15,000 characters each": lambda: more_infos(
        DOC, INFO.replace(b"<headline>", b"<headline>" + b"h" * 15_000), 63
    ),
}


def run(repeat: int) -> dict[str, object]:
    events_from_cap(DOC)  # compile the schema outside the timings
    cases = {}
    for name, build in CASES.items():
        doc = build()
        best = math.inf
        for _ in range(repeat):
            started = time.perf_counter()
            try:
                outcome = f"{len(events_from_cap(doc, department='oem'))} events"
            except CapError as exc:
                outcome = f"{exc.reason}: {str(exc)[:80]}"
            best = min(best, time.perf_counter() - started)
        cases[name] = {"bytes": len(doc), "seconds": round(best, 4), "outcome": outcome}
    worst = max(c["seconds"] for c in cases.values())  # type: ignore[type-var]
    return {"cases": cases, "worst_s": worst, "max_cap_bytes": MAX_CAP_BYTES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    print(json.dumps(run(parser.parse_args().repeat)))


if __name__ == "__main__":
    main()
