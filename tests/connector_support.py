"""What the connector tests share: a city config with connectors, the CLI as a real process,
a webhook receiver on loopback that verifies signatures with the `standardwebhooks` package
(not our code), and a Mosquitto broker started on a free port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, SEATTLE
from workers.standins import LocalMosquitto, free_port, mosquitto_binary

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


class WebhookReceiver:
    """An HTTP server on loopback: each POST is verified with `standardwebhooks`; while `up`
    a verified one is recorded and answered 200, while down it gets 503."""

    def __init__(self, secret: str):
        from standardwebhooks import Webhook

        self.verifier = Webhook(secret)
        self.up: dict[str, bool] = {}  # path -> up (default True)
        self.received: dict[str, list[dict[str, Any]]] = {}  # path -> messages accepted
        self.ids: list[str] = []  # webhook-id of each accepted request
        self.refused = 0
        self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    payload = receiver.verifier.verify(body, dict(self.headers))
                except Exception:
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                with receiver.lock:
                    if not receiver.up.get(self.path, True):
                        receiver.refused += 1
                        code = 503
                    else:
                        receiver.received.setdefault(self.path, []).extend(
                            payload["data"]["messages"]
                        )
                        receiver.ids.append(self.headers["webhook-id"])
                        code = 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def messages(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received.get(path, []))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
