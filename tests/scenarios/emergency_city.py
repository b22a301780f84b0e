"""A small city for the emergency scenarios: real Seattle city limits, five departments, short
acknowledgement deadlines, fallback webhooks on a real loopback HTTP server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from redis import Redis

from city.config import CityConfig, parse_city
from city.routing import Router
from jobs.channels import BreakerRegistry
from jobs.emergency import EscalationPlan, use_plan
from queues.acks import EmergencyStore
from queues.inbox import Inbox
from queues.keys import Keys
from queues.message import Message
from queues.priority import ESCALATION, make_queue
from tests.conftest import SEATTLE
from tests.pipeline_harness import Harness
from workers.worker import build_worker

LAYER = str((SEATTLE.parent / "layers" / "city-limits.geojson").resolve())
FAST = {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.02}
DEADLINE_S = 0.5
INTERVAL_S = 0.4
# A polygon over central Seattle, lat,lon pairs as CAP writes them.
SEATTLE_POLYGON = "47.58,-122.36 47.66,-122.36 47.66,-122.28 47.58,-122.28 47.58,-122.36"


class Webhooks:
    """A loopback HTTP server: per path, the scripted statuses in order, then 200."""

    def __init__(self, scripts: dict[str, list[int]] | None = None):
        self.scripts = {path: list(codes) for path, codes in (scripts or {}).items()}
        self.requests: list[dict[str, Any]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hooks.requests.append(
                    {"path": self.path, "key": self.headers["Idempotency-Key"],
                     "body": json.loads(body)}
                )  # fmt: skip
                script = hooks.scripts.get(self.path, [])
                status = script.pop(0) if script else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def to(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def city(hooks: Webhooks, drop_dir: Path, deadline_s: float = DEADLINE_S) -> CityConfig:
    def webhook(path: str) -> dict[str, Any]:
        return {"kind": "webhook", "url": hooks.base + path, "retry": FAST}

    escalation = {
        "ack_deadline_s": {"Extreme": deadline_s, "default": 30},
        "level_interval_s": INTERVAL_S,
    }
    cap_and_health = ["cap.*", "health.emergency"]
    return parse_city(
        {
            "city": "Testville",
            "layers": {"city": {"path": LAYER}},
            "departments": [
                {
                    "id": "fire",
                    "name": "Fire",
                    "jurisdiction": [{"layer": "city"}],
                    "subscriptions": [{"id": "fire-alerts", "types": cap_and_health}],
                    "fallback": [webhook("/fire")],
                    "escalation": {
                        **escalation,
                        "chain": [
                            {
                                "name": "Battalion Chief",
                                "role": "supervisor",
                                "channels": [webhook("/chief")],
                            },
                            {
                                "name": "OEM duty officer",
                                "role": "duty-officer",
                                "department": "emergency-management",
                            },
                        ],  # fmt: skip
                    },
                },
                {
                    "id": "ems",
                    "name": "EMS",
                    "jurisdiction": [{"layer": "city"}],
                    "subscriptions": [{"id": "ems-alerts", "types": cap_and_health}],
                    "escalation": escalation,
                },
                {
                    "id": "police",
                    "name": "Police",
                    "jurisdiction": [{"layer": "city"}],
                    "subscriptions": [{"id": "police-alerts", "types": ["cap.*"]}],
                    "escalation": escalation,
                },
                {
                    "id": "emergency-management",
                    "name": "Office of Emergency Management",
                    "subscriptions": [{"id": "oem", "types": cap_and_health, "scope": "citywide"}],
                    "fallback": [{"kind": "file", "directory": str(drop_dir)}],
                    "escalation": escalation,
                },
                {
                    "id": "parks",
                    "name": "Parks",
                    "jurisdiction": [{"layer": "city"}],
                    "subscriptions": [{"id": "parks-air", "types": ["environment.air_quality"]}],
                },
            ],
            # Emergencies are shared with every responder (default deny otherwise).
            "sharing": {
                "policies": [
                    {"id": f"{d}-emergencies", "owner": d, "types": cap_and_health}
                    for d in ("fire", "ems", "police", "emergency-management", "parks")
                ]
            },
        }
    )


def cap_alert(identifier: str, severity: str = "Extreme") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>oem@seattle.example</sender>
  <sent>2026-11-25T06:00:00-08:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <category>Geo</category>
    <event>Earthquake</event>
    <urgency>Immediate</urgency>
    <severity>{severity}</severity>
    <certainty>Observed</certainty>
    <headline>M6.8 earthquake: expect damage city-wide</headline>
    <area>
      <areaDesc>Central Seattle</areaDesc>
      <polygon>{SEATTLE_POLYGON}</polygon>
    </area>
  </info>
</alert>""".encode()


def harness(redis: Redis, keys: Keys, config: CityConfig) -> Harness:
    h = Harness(redis, keys, config, Path("."), Router.from_config(config, Path(".")))
    # Fresh breakers per test: a webhook endpoint's failures never leak into another test.
    use_plan(h.context, EscalationPlan.from_config(config, breakers=BreakerRegistry()))
    return h


def run_escalations(h: Harness) -> None:
    """One pass of an escalation worker: RQ's scheduler enqueues the due checks, then runs them."""
    worker = build_worker(h.redis, h.keys, "escalation", h.context, name=f"{h.keys.prefix}-esc")
    worker.work(burst=True, with_scheduler=True, logging_level="ERROR")


def escalate_until(
    h: Harness, done: Callable[[], bool], timeout_s: float = 10.0, settle_s: float = 0.0
) -> None:
    """Run escalation passes as deadlines fall due until `done()`; then, with `settle_s`, keep
    running them that long so anything wrongly scheduled would show."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "escalation did not reach the expected state in time"
        time.sleep(0.05)
        run_escalations(h)
    end = time.monotonic() + settle_s
    while time.monotonic() < end:
        time.sleep(0.05)
        run_escalations(h)


def no_check_waits(h: Harness) -> bool:
    """Every escalation check scheduled so far has run: none waits for its time, none is queued.
    (Between passes: a pass runs whatever its scheduler enqueued before it ends.)"""
    queue = make_queue(h.redis, h.keys, ESCALATION)
    return queue.scheduled_job_registry.count == 0 and queue.count == 0


def read_and_ack(redis: Redis, keys: Keys, dept: str) -> list[Message]:
    inbox = Inbox(redis, dept, keys)
    messages = inbox.read(count=1000)
    inbox.ack(messages)
    return messages


def status(redis: Redis, keys: Keys, event_id: str) -> Any:
    found = EmergencyStore(redis, keys).status(event_id)
    assert found is not None, f"emergency {event_id} is not tracked"
    return found
