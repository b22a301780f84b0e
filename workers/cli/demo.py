"""CLI: `cityrelay demo`."""

from __future__ import annotations

import argparse
from pathlib import Path

from workers.runtime import Runtime


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "demo", help="run the demo city (embedded Redis and S3 stand-ins unless configured)"
    )
    p.add_argument("--seconds", type=float, default=20, help="how long to publish (default 20)")
    p.add_argument(
        "--rate",
        type=float,
        help="events per second (default 1000 on Redis, 60 on the embedded stand-in)",
    )
    p.add_argument("--keep", action="store_true", help="keep the demo's keys in Redis afterwards")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, runtime: Runtime) -> int:
    from workers.demo import run_demo

    return run_demo(args.seconds, args.rate, Path(args.config) if args.config else None, args.keep)
