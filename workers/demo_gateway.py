"""The demo's HTTP way in (issue #13): the transit agency's AVL system posts its vehicle
positions to `cityrelay gateway` as CloudEvents batches with its API token, the way a
department system that cannot talk Redis would. The gateway runs beside the other processes on
a free loopback port; its events carry ids starting with ``http-`` so the summary can count
what came in by HTTP.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import requests
from redis import Redis

from queues.keys import Keys
from queues.tokens import TokenStore
from workers.standins import free_port

HTTP_DEPT = "transit"
BATCH = 20
READY_TIMEOUT_S = 30.0


@dataclass
class GatewayDemo:
    token: str
    port: int = field(default_factory=free_port)
    sent: int = 0
    refused: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def prepare(cls, redis: Redis, keys: Keys) -> GatewayDemo:
        """A token for the transit agency, made the way `cityrelay token create` makes one."""
        token, _ = TokenStore(redis, keys).create(HTTP_DEPT, name="demo AVL system")
        return cls(token)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def commands(self) -> list[list[str]]:
        return [["gateway", "--port", str(self.port), "--workers", "1"]]

    def start(self, rate: float, points: list[dict[str, float]]) -> None:
        """Post batches of vehicle positions at `rate` events per second until `stop`."""
        self._thread = threading.Thread(
            target=self._run, args=(rate, points), name="demo-http", daemon=True
        )
        self._thread.start()

    def _run(self, rate: float, points: list[dict[str, float]]) -> None:
        session = requests.Session()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._ready(session):
            if time.monotonic() > deadline:
                return
            time.sleep(0.2)
        started = time.monotonic()
        while not self._stop.is_set():
            if int((time.monotonic() - started) * rate) - self.sent >= BATCH:
                self._post(session, points)
            else:
                self._stop.wait(0.05)
        if self.sent == 0:  # a short demo still shows one batch coming in by HTTP
            self._post(session, points)
        session.close()

    def _post(self, session: requests.Session, points: list[dict[str, float]]) -> None:
        batch = [self._position(self.sent + i, points) for i in range(BATCH)]
        reply = session.post(
            self.url + "/v1/events",
            data=orjson.dumps(batch),
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/cloudevents-batch+json",
            },
            timeout=10,
        )
        reply.raise_for_status()
        self.refused += len(reply.json()["refused"])
        self.sent += BATCH

    def _ready(self, session: requests.Session) -> bool:
        try:
            return session.get(self.url + "/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    @staticmethod
    def _position(n: int, points: list[dict[str, float]]) -> dict[str, Any]:
        return {
            "id": f"http-{n}",
            "source": f"/city/{HTTP_DEPT}",
            "specversion": "1.0",
            "type": "transit.vehicle_position",
            "time": datetime.now(UTC).isoformat(),
            "location": points[n % len(points)],
            "data": {"vehicle_id": f"avl-{n % 60}", "route": "44", "speed_kmh": 31.5,
                     "heading": 90.0},
        }  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=READY_TIMEOUT_S + 15)
