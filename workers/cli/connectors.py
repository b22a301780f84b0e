"""CLI: push (webhook push delivery, workers/push.py), mqtt-bridge (workers/mqtt_bridge.py) and
webhook-secret (a fresh Standard Webhooks secret). `publish --csv` is in pipeline.py."""

from __future__ import annotations

import argparse

from jobs.channels.signed import new_secret
from queues.connect import WORKER_SETTINGS
from workers import logs
from workers.cli.pipeline import _stop_on_signals
from workers.runtime import Runtime


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "push", help="push the inboxes of departments with a delivery: webhook (signed)"
    )
    p.add_argument("--dept", action="append", help="only this department (repeatable)")
    p.add_argument("--consumer", default="push", help="consumer name in each inbox's group")
    p.set_defaults(func=cmd_push)

    p = subparsers.add_parser(
        "mqtt-bridge", help="MQTT topics of the mqtt: section -> ingest streams (QoS 1)"
    )
    p.add_argument("--url", help="broker mqtt://host:port (default: the mqtt: section's)")
    p.add_argument("--client-id", help="persistent session id (default: the mqtt: section's)")
    p.set_defaults(func=cmd_mqtt_bridge)

    p = subparsers.add_parser(
        "webhook-secret", help="print a fresh Standard Webhooks secret (whsec_...)"
    )
    p.set_defaults(func=lambda args, runtime: print(new_secret()) or 0)


def cmd_push(args: argparse.Namespace, runtime: Runtime) -> int:
    from workers.push import build_pushers, run_pushers

    config, base = runtime.city()
    redis = runtime.redis(**WORKER_SETTINGS)
    pushers = build_pushers(
        redis, runtime.keys, config, base, consumer=args.consumer, only=args.dept
    )
    logs.set_role("push")
    stop = _stop_on_signals()
    if not pushers:  # idle, like the relay: a Procfile's other processes keep running
        print("push: no department has a delivery: webhook; idling", flush=True)
        stop.wait()
        return 0
    run_pushers(pushers, stop)
    return 0


def cmd_mqtt_bridge(args: argparse.Namespace, runtime: Runtime) -> int:
    from workers.mqtt_bridge import run_bridge

    config, _ = runtime.city()
    logs.set_role("mqtt-bridge")
    stop = _stop_on_signals()
    if config.mqtt is None:  # idle, like the relay: a Procfile's other processes keep running
        print("mqtt-bridge: the city config has no mqtt: section; idling", flush=True)
        stop.wait()
        return 0
    return run_bridge(
        runtime.redis(**WORKER_SETTINGS),
        runtime.keys,
        config,
        stop,
        url=args.url,
        client_id=args.client_id,
    )
