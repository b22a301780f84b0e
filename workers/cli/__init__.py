"""The `cityrelay` command.

Sub-commands live in ``workers/cli_*.py`` modules; each exposes ``register(subparsers)`` that
adds its parsers and sets ``func`` (called with the parsed args and the `Runtime`, returning the
exit code). New command groups are added by adding a module; this file does not change.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import workers
from city.config import ConfigError
from workers import logs
from workers.runtime import Runtime


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
    for info in sorted(pkgutil.iter_modules(workers.__path__), key=lambda m: m.name):
        if info.name.startswith("cli_"):
            module = importlib.import_module(f"workers.{info.name}")
            module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
