"""CLI: `cityrelay metrics` - the Prometheus exporter for one city."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from queues.observe import CityCollector
from workers.runtime import Runtime

log = logging.getLogger("cityrelay.metrics")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("metrics", help="serve Prometheus metrics (or print them once)")
    p.add_argument("--port", type=int, default=9108)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--once", action="store_true", help="print the metrics and exit")
    p.set_defaults(func=cmd_metrics)


def cmd_metrics(args: argparse.Namespace, runtime: Runtime) -> int:
    config, _ = runtime.city()
    registry = CollectorRegistry()
    departments = config.department_ids
    registry.register(CityCollector(runtime.redis(), runtime.keys, departments))
    if args.once:
        sys.stdout.write(generate_latest(registry).decode())
        return 0
    server, thread = start_http_server(args.port, addr=args.bind, registry=registry)
    log.info(
        "serving metrics",
        extra={"url": f"http://{args.bind}:{args.port}/metrics", "departments": len(departments)},
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    thread.join()
    return 0
