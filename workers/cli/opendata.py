"""`cityrelay opendata`: k-anonymous open data from the hot tier.

    cityrelay opendata --type traffic.incident --from 2026-11-01T00:00Z --to 2026-11-02T00:00Z \\
        [--k 10] [--epsilon 1.0] [--records] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from city.privacy import opendata, parse_duration
from workers.cli.policy import parse_time
from workers.cli.privacy import _privacy
from workers.runtime import Runtime

PAGE = 5000  # hot-tier entries read per XRANGE


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    od = subparsers.add_parser("opendata", help="publish k-anonymous open data from the hot tier")
    od.add_argument("--type", required=True, dest="etype")
    od.add_argument("--from", required=True, dest="start", type=parse_time)
    od.add_argument("--to", required=True, dest="end", type=parse_time)
    od.add_argument("--k", type=int)
    od.add_argument("--epsilon", type=float, help="add Laplace noise with this epsilon")
    od.add_argument("--resolution", type=int)
    od.add_argument("--bucket", help="time bucket, e.g. 1h")
    od.add_argument("--records", action="store_true", help="k-anonymous records, not counts")
    od.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    od.set_defaults(func=cmd_opendata)


# ------------------------------------------------------------------------------- open data


def read_hot(runtime: Runtime, etype: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Events of `etype` in the hot tier with `start` <= time < `end` (entries scanned with a
    day of slack around the window: the stream id is the routing time, not the event time)."""
    redis = runtime.redis()
    lo = int((start - timedelta(days=1)).timestamp() * 1000)
    hi = int((end + timedelta(days=1)).timestamp() * 1000)
    out = []
    cursor = f"{lo}-0"
    while True:
        batch = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            redis.xrange(runtime.keys.hot(etype), min=cursor, max=str(hi), count=PAGE),
        )
        for _entry, fields in batch:
            event = json.loads(fields[b"e"])
            when = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
            if start <= when < end:
                out.append(event)
        if len(batch) < PAGE:
            return out
        cursor = "(" + batch[-1][0].decode()


def cmd_opendata(args: argparse.Namespace, runtime: Runtime) -> int:
    city, _, config = _privacy(runtime)
    od = config.opendata
    k = args.k or od.k
    if k < 2:
        print("opendata: --k must be at least 2", file=sys.stderr)
        return 2
    try:
        bucket = parse_duration(args.bucket or od.bucket)
    except ValueError as exc:
        print(f"opendata: --bucket {exc}", file=sys.stderr)
        return 2
    resolution = od.resolution if args.resolution is None else args.resolution
    events = read_hot(runtime, args.etype, args.start, args.end)
    if args.records:
        tp = config.types.get(args.etype)
        if tp is None:
            print(f"opendata: privacy.types declares no {args.etype!r}", file=sys.stderr)
            return 2
        result = opendata.records(events, tp, k, resolution, od.min_resolution, bucket)
    else:
        epsilon = args.epsilon if args.epsilon is not None else od.epsilon
        result = opendata.aggregate(events, k, resolution, od.min_resolution, bucket, epsilon)
    result["meta"].update(
        {
            "type": args.etype,
            "from": args.start.isoformat(),
            "to": args.end.isoformat(),
            "events": len(events),
            "city": city.city,
        }
    )
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {len(result['rows'])} rows to {args.out}")
    else:
        print(text)
    return 0
