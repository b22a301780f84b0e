"""A real `cityrelay gateway` process for the gateway tests: uvicorn on a free port, waited
for on /healthz (never on a sleep), stopped with SIGTERM."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tests.conftest import ROOT, SEATTLE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    def __init__(
        self,
        redis_url: str,
        prefix: str,
        config: Path = SEATTLE,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, REDIS_URL=redis_url, PYTHONPATH=str(ROOT), **(env or {}))
        self.cmd = [
            sys.executable, "-m", "workers.cli", "--prefix", prefix, "--config", str(config),
            "gateway", "--port", str(self.port), "--workers", "1", *args,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        # a file, not a pipe: a full pipe would stall the server
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - read after stop()

    def start(self, timeout: float = 30) -> GatewayProcess:
        self.process = subprocess.Popen(
            self.cmd, env=self.env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out = self.output()
                raise AssertionError(f"gateway exited {self.process.returncode}:\n{out}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()  # never leave it running behind a failed test
        raise AssertionError(f"gateway not healthy within {timeout} s:\n{self.output()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        """What it logged so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


WEST = {"lat": 47.6205, "lon": -122.3493}  # Seattle Center, SPD West precinct


def incident(**extra: object) -> dict:
    """A valid sdot traffic incident in CloudEvents structured form, with a fresh id."""
    return {
        "id": uuid.uuid4().hex,
        "source": "/city/sdot",
        "specversion": "1.0",
        "type": "traffic.incident",
        "time": datetime.now(UTC).isoformat(),
        "data": {"kind": "collision", "severity": 2},
        "location": WEST,
        **extra,
    }


def curl_binary_incident(url: str, token: str, event_id: str) -> tuple[str, str]:
    """POST an sdot traffic incident with curl in CloudEvents binary mode (ce-* headers);
    returns (response body, HTTP status)."""
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{url}/v1/events",
         "-H", f"Authorization: Bearer {token}",
         "-H", "Content-Type: application/json",
         "-H", "ce-specversion: 1.0", "-H", f"ce-id: {event_id}",
         "-H", "ce-source: /city/sdot", "-H", "ce-type: traffic.incident",
         "-H", f"ce-time: {datetime.now(UTC).isoformat()}",
         "-H", 'ce-location: {"lat": 47.6205, "lon": -122.3493}',
         "-d", '{"kind": "collision", "severity": 2}', "-w", "\n%{http_code}"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    body, status = out.stdout.rsplit("\n", 1)
    return body, status
