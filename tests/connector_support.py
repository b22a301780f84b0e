"""What the connector tests share: a city config with connectors, the CLI as a real process,
a webhook receiver on loopback that verifies signatures with the `standardwebhooks` package
(not our code), and a Mosquitto broker started on a free port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, SEATTLE
from workers.standins import LocalMosquitto, LoopbackWebhook, mosquitto_binary

MOSQUITTO = mosquitto_binary()


def write_connector_city(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """The demo city (layer paths absolute), changed by `edit`, as a YAML file."""
    doc = yaml.safe_load(SEATTLE.read_text())
    for layer in doc["layers"].values():
        layer["path"] = str((SEATTLE.parent / layer["path"]).resolve())
    edit(doc)
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def department(doc: dict[str, Any], dept: str) -> dict[str, Any]:
    return next(d for d in doc["departments"] if d["id"] == dept)


class CliProcess:
    """`python -m workers.cli --prefix P --config C ...` as a subprocess."""

    def __init__(self, redis_url: str, prefix: str, config: Path, **env: str):
        self.env = dict(os.environ, REDIS_URL=redis_url, PYTHONPATH=str(ROOT), **env)
        self.base = [sys.executable, "-m", "workers.cli", "--prefix", prefix, "--config",
                     str(config), "--log-format", "text"]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> CliProcess:
        self.process = subprocess.Popen(self.base + list(args), env=self.env, cwd=ROOT)
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def WebhookReceiver(secret: str) -> LoopbackWebhook:  # noqa: N802 - reads like a class
    """A webhook endpoint on loopback whose every POST is verified with the `standardwebhooks`
    package (not our code): a bad signature gets 401 and is counted."""
    from standardwebhooks import Webhook

    return LoopbackWebhook(Webhook(secret).verify)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def Mosquitto(tmp: Path) -> LocalMosquitto:  # noqa: N802 - reads like the class it makes
    return LocalMosquitto(directory=tmp)


def inbox_entry(event_id: str, dept: str, priority: str = "routine") -> dict[str, str]:
    """The fields the delivery script writes to an inbox (jobs/route.py)."""
    event = {"id": event_id, "type": "traffic.incident", "source": "/city/sdot",
             "specversion": "1.0", "time": "2026-12-07T01:00:00+00:00", "priority": priority,
             "data": {"kind": "collision", "severity": 2}}  # fmt: skip
    via = {"subscriptions": [f"{dept}-sub"], "purpose": "operations", "zones": []}
    return {"e": json.dumps(event), "via": json.dumps(via), "ing": f"{int(time.time() * 1000)}-0",
            "pri": priority}  # fmt: skip
