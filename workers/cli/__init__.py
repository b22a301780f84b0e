"""The `cityrelay` command: the commands you type, one module per command group.

`GROUPS` below is the single registry: each named module (``workers/cli/<name>.py``) exposes
``register(subparsers)``, which adds its sub-commands and sets ``func`` (called with the parsed
args and the `Runtime`, returning the exit code); a new command group is one more line there,
and the order of the lines is the order of ``cityrelay --help``. These modules may import
city, queues and jobs, and from workers the shared `runtime` and `logs` and the processes they
start (`ingest`, `worker`, `relay`, `demo`); nothing outside this package imports them but the
tests (the processes never import the CLI; `demo` runs it as ``python -m workers.cli``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from city.config import ConfigError
from workers import logs
from workers.runtime import Runtime

# The command groups, in the order `cityrelay --help` lists their commands.
GROUPS = (
    "archive",  # archive, history, scheduler
    "cap",  # cap
    "demo",  # demo
    "emergency",  # ack, emergency
    "gateway",  # gateway, token
    "geo",  # geo, jurisdictions, locate
    "metrics",  # metrics
    "pipeline",  # publish, ingest, worker, inbox, deadletters
    "policy",  # grant, policy, audit, acl
    "pia",  # pia
    "consent",  # consent
    "connectors",  # push, mqtt-bridge, webhook-secret
    "opendata",  # opendata
    "privacy",  # privacy keys
    "relay",  # relay
    "status",  # status
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cityrelay",
        description="The event backbone that lets a city's departments share events.",
    )
    parser.add_argument(
        "--redis-url", help="Redis URL (default: $REDIS_URL or redis://127.0.0.1:6379/0)"
    )
    parser.add_argument("--prefix", help="Redis key prefix (default: $CITYRELAY_PREFIX or 'city')")
    parser.add_argument("--config", help="city YAML (default: $CITYRELAY_CONFIG)")
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help="log lines as JSON objects or text (default: $CITYRELAY_LOG_FORMAT, else text on "
        "a terminal and json otherwise)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=logs.LEVELS,
        help="default: $CITYRELAY_LOG_LEVEL or INFO",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in GROUPS:
        importlib.import_module(f"workers.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # RQ reads RQ_KEY_PREFIX once, at import, and the command modules import rq: on a cluster
    # URL the group's RQ prefix is set from the global flags first (workers/runtime.py).
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--redis-url")
    early.add_argument("--prefix")
    known, _ = early.parse_known_args(argv)
    Runtime.from_env(known.redis_url, known.prefix).use_rq_key_prefix()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logs.configure(args.log_format, args.log_level, role=args.command)
    runtime = Runtime.from_env(args.redis_url, args.prefix, args.config)
    try:
        return int(args.func(args, runtime) or 0)
    except ConfigError as exc:
        print(f"config error:\n{exc}", file=sys.stderr)
        return 2
